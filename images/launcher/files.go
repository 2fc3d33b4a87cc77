package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// terminationLogPath is Kubernetes' default terminationMessagePath: the kubelet shows its content
// as the container's termination message (kubectl describe pod, the pod's status).
const terminationLogPath = "/dev/termination-log"

// marker is the --marker file. It is written when the stop signal arrives and written again,
// with the last two fields, once dbt has exited.
type marker struct {
	Signal              string   `json:"signal"`
	ReceivedAt          string   `json:"received_at"`
	ExitCode            *int     `json:"exit_code,omitempty"`
	StoppedAfterSeconds *float64 `json:"stopped_after_seconds,omitempty"`
}

func newMarker(sig os.Signal, at time.Time) *marker {
	return &marker{
		Signal:     signalName(sig),
		ReceivedAt: at.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
	}
}

func (m *marker) write(path string) error {
	if m.StoppedAfterSeconds != nil {
		rounded := math.Round(*m.StoppedAfterSeconds*1000) / 1000
		m.StoppedAfterSeconds = &rounded
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, bytes.NewReader(append(data, '\n')), 0o644)
}

// writeFileAtomic replaces path with what src holds through a rename in the same directory, so a
// reader (or a container starting while an init container still copies) sees the old content or
// the new one, never a partial file.
func writeFileAtomic(path string, src io.Reader, mode os.FileMode) (err error) {
	tmp := fmt.Sprintf("%s.tmp-%d", path, os.Getpid())
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = io.Copy(f, src); err != nil {
		return err
	}
	// The umask may have taken bits away from the mode given to OpenFile.
	if err = f.Chmod(mode); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	syncDir(filepath.Dir(path))
	return nil
}

// syncDir makes a rename in dir durable. It is best effort: the file is in place either way.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// writeTerminationLog appends line to path if that file exists and is writable. It never creates
// the file: outside Kubernetes, or with another terminationMessagePath, there is nothing to write.
func writeTerminationLog(path, line string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.WriteString(line + "\n")
}

// signalName is the conventional name ("SIGTERM"); Go's String gives "terminated".
func signalName(sig os.Signal) string {
	names := map[os.Signal]string{
		syscall.SIGTERM:  "SIGTERM",
		syscall.SIGINT:   "SIGINT",
		syscall.SIGHUP:   "SIGHUP",
		syscall.SIGQUIT:  "SIGQUIT",
		syscall.SIGUSR1:  "SIGUSR1",
		syscall.SIGUSR2:  "SIGUSR2",
		syscall.SIGWINCH: "SIGWINCH",
	}
	if name, ok := names[sig]; ok {
		return name
	}
	return sig.String()
}
