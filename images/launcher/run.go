package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
)

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER, which the syscall package does not name.
const prSetChildSubreaper = 36

// pollInterval bounds how late the launcher notices a change no SIGCHLD announces: the last
// member of the child's process group exiting when it was not the launcher's child.
const pollInterval = 100 * time.Millisecond

// stopSignals turn into one SIGINT for dbt; forwardedSignals reach the child's group unchanged.
var (
	stopSignals      = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	forwardedSignals = []os.Signal{
		syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH,
	}
)

// supervisor owns the child and handles every signal the launcher receives while it runs.
type supervisor struct {
	opts    runOptions
	signals chan os.Signal
	pgid    int // the child's pid, which is also its process group id

	// waitingFor holds the processes whose exit matters (the child, the after-interrupt command)
	// and statuses their wait status once reaped; other reaped processes are orphans, forgotten.
	waitingFor map[int]bool
	statuses   map[int]syscall.WaitStatus
	childExit  time.Time // when the child was reaped

	stop   os.Signal // the first stop signal, nil until one arrives
	stopAt time.Time
}

// run is the `run` command: it returns the launcher's exit code.
func run(opts runOptions) int {
	s := &supervisor{
		opts:       opts,
		signals:    make(chan os.Signal, 64),
		waitingFor: map[int]bool{},
		statuses:   map[int]syscall.WaitStatus{},
	}
	// Catch signals before the child exists, so a SIGTERM that arrives while it starts is not lost.
	// A handled signal is reset to its default when the child execs; an ignored one would not be.
	// SIGPIPE is caught only so that a closed stderr cannot kill the launcher.
	signal.Notify(s.signals, append(append([]os.Signal{syscall.SIGCHLD, syscall.SIGPIPE},
		stopSignals...), forwardedSignals...)...)
	// As PID 1 the launcher inherits orphans anyway; as a subreaper it also does when it is not
	// (in tests, or under another init), so waiting for the child's process group works the same.
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		logf("cannot become a child subreaper: %v", errno)
	}

	pid, err := startChild(opts.argv)
	if err != nil {
		line := fmt.Sprintf("kubedbt-launch: cannot start %s: %v", opts.argv[0], startErrorText(err))
		fmt.Fprintln(os.Stderr, line)
		writeTerminationLog(terminationLogPath, line)
		return startErrorCode(err)
	}
	s.pgid = pid
	s.waitingFor[pid] = true

	s.waitUntil(s.exited(pid), time.Time{})
	code := exitCode(s.statuses[pid])
	if s.stop == nil {
		return code
	}
	return s.finishStop(code)
}

// finishStop runs once the child has exited after a stop signal; it returns the exit code.
func (s *supervisor) finishStop(code int) int {
	stoppedAfter := s.childExit.Sub(s.stopAt).Seconds()
	s.waitForGroup()
	if len(s.opts.afterInterrupt) > 0 {
		s.runAfterInterrupt()
	}
	if s.opts.marker != "" {
		m := newMarker(s.stop, s.stopAt)
		m.ExitCode = &code
		m.StoppedAfterSeconds = &stoppedAfter
		if err := m.write(s.opts.marker); err != nil {
			logf("cannot write marker: %v", err)
		}
	}
	line := fmt.Sprintf("kubedbt-launch: stopped by %s: dbt was interrupted and exited %d after %.1fs",
		signalName(s.stop), code, stoppedAfter)
	fmt.Fprintln(os.Stderr, line)
	writeTerminationLog(terminationLogPath, line)
	if code != 0 {
		return 130
	}
	return 0 // dbt finished successfully just in time
}

// startChild starts argv in its own process group, so that the SIGINT reaches the whole job, as
// Ctrl-C in a terminal would, and nothing of it outlives the group wait.
func startChild(argv []string) (int, error) {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return 0, err
	}
	return syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
}

// startErrorCode is the shell's convention: 126 for a program that cannot be executed, 127 for
// one that cannot be found.
func startErrorCode(err error) int {
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.ENOEXEC) ||
		errors.Is(err, syscall.EISDIR) {
		return 126
	}
	return 127
}

// startErrorText drops the wrappers that would repeat the program's name in the message.
func startErrorText(err error) error {
	var execErr *exec.Error
	if errors.As(err, &execErr) {
		err = execErr.Err
	}
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		err = pathErr.Err
	}
	return err
}

// exitCode maps a wait status to a shell-style exit code: 128+N for death by signal N.
func exitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// waitUntil handles signals and reaps children until done returns true, or until the deadline
// (the zero time: none) passes; it reports whether done became true.
func (s *supervisor) waitUntil(done func() bool, deadline time.Time) bool {
	// SIGCHLDs coalesce, and the channel may drop signals when it is full: reaping on a tick too
	// means no exit goes unnoticed.
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		timer := time.NewTimer(time.Until(deadline))
		defer timer.Stop()
		timeout = timer.C
	}
	for {
		if done() {
			return true
		}
		select {
		case sig := <-s.signals:
			s.handle(sig)
		case <-tick.C:
			s.reap()
		case <-timeout:
			return done()
		}
	}
}

func (s *supervisor) exited(pid int) func() bool {
	return func() bool {
		_, ok := s.statuses[pid]
		return ok
	}
}

// groupGone tells whether no process is left in the child's process group. Zombies still count
// until they are reaped, which waitUntil does.
func (s *supervisor) groupGone() bool {
	return syscall.Kill(-s.pgid, 0) == syscall.ESRCH
}

func (s *supervisor) handle(sig os.Signal) {
	switch sig {
	case syscall.SIGCHLD:
		s.reap()
	case syscall.SIGTERM, syscall.SIGINT:
		s.stopRequested(sig)
	case syscall.SIGPIPE:
	default:
		// The group may be gone already (ESRCH): there is nobody left to tell.
		_ = syscall.Kill(-s.pgid, sig.(syscall.Signal))
	}
}

// stopRequested interrupts dbt the first time. dbt treats a second SIGINT as "stop now" and
// abandons its cleanup, so later stop signals are only logged.
func (s *supervisor) stopRequested(sig os.Signal) {
	if s.stop != nil {
		logf("%s received: ignored, dbt is already stopping", signalName(sig))
		return
	}
	s.stop, s.stopAt = sig, time.Now()
	// dbt first: every millisecond counts against the grace period; the marker can wait.
	_ = syscall.Kill(-s.pgid, syscall.SIGINT)
	logf("%s received: interrupting dbt (SIGINT to process group %d)", signalName(sig), s.pgid)
	if s.opts.marker != "" {
		if err := newMarker(s.stop, s.stopAt).write(s.opts.marker); err != nil {
			logf("cannot write marker: %v", err)
		}
	}
}

// reap collects every exited child, including orphans reparented to the launcher, and keeps the
// status of those it waits for.
func (s *supervisor) reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: none has exited
		}
		if s.waitingFor[pid] {
			s.statuses[pid] = ws
			if pid == s.pgid {
				s.childExit = time.Now()
			}
		}
	}
}

// waitForGroup gives what is left of the child's process group --group-wait seconds to finish,
// then kills it: the child may have been a wrapper that died of the SIGINT while dbt, its own
// child, still writes run_results.json.
func (s *supervisor) waitForGroup() {
	deadline := time.Now().Add(seconds(s.opts.groupWait))
	if s.waitUntil(s.groupGone, deadline) {
		return
	}
	logf("process group %d still running after %gs: killing it", s.pgid, s.opts.groupWait)
	_ = syscall.Kill(-s.pgid, syscall.SIGKILL)
}

// runAfterInterrupt runs the --after-interrupt argv with its stdout in a temporary file, which
// becomes --after-interrupt-output only if the command succeeds: a reader never sees the output
// of a command that failed or was killed half-way. Its deadline counts from the stop signal, not
// from its start: the grace period began then, and what is left of it belongs to the uploader.
func (s *supervisor) runAfterInterrupt() {
	argv, out := s.opts.afterInterrupt, s.opts.afterInterruptOutput
	timeout := s.opts.afterInterruptTimeout
	deadline := s.stopAt.Add(seconds(timeout))
	if !time.Now().Before(deadline) {
		logf("after-interrupt command %s skipped: %gs since the stop signal have passed", argv[0], timeout)
		return
	}
	tmp := out + ".tmp"
	pid, err := startAfterInterrupt(argv, tmp)
	if err != nil {
		logf("cannot start after-interrupt command %s: %v", argv[0], startErrorText(err))
		os.Remove(tmp)
		return
	}
	s.waitingFor[pid] = true
	if !s.waitUntil(s.exited(pid), deadline) {
		logf("after-interrupt command %s still running %gs after the stop signal: killing it", argv[0], timeout)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		// SIGKILL cannot be ignored; the bound only guards against a process stuck in the kernel.
		s.waitUntil(s.exited(pid), time.Now().Add(2*time.Second))
		os.Remove(tmp)
		return
	}
	code := exitCode(s.statuses[pid])
	if code != 0 {
		logf("after-interrupt command %s exited %d", argv[0], code)
		os.Remove(tmp)
		return
	}
	if err := os.Rename(tmp, out); err != nil {
		logf("after-interrupt command %s: %v", argv[0], err)
		return
	}
	logf("after-interrupt command %s exited 0: output in %s", argv[0], out)
}

// startAfterInterrupt starts argv in its own process group, so that a timeout kills all of it,
// with stdin from /dev/null and stdout to the file stdout.
func startAfterInterrupt(argv []string, stdout string) (int, error) {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return 0, err
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	defer devNull.Close()
	out, err := os.OpenFile(stdout, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	return syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{devNull.Fd(), out.Fd(), 2},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
}

func seconds(s float64) time.Duration {
	return time.Duration(s * float64(time.Second))
}
