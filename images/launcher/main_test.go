package main

// The tests run the real launcher binary, built once in TestMain, on real processes. Its children
// are mostly this test binary again, in a helper mode chosen by its first argument (see helper),
// or /bin/sh scripts that start it.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary run helper instead of the tests; children inherit it.
const helperEnv = "KUBEDBT_LAUNCH_TEST_HELPER"

var (
	launcher string // the launcher binary under test
	self     string // this test binary, to run as a helper child
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helper(os.Args[1:]))
	}
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kubedbt-launch-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	launcher = filepath.Join(dir, "kubedbt-launch")
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	build := exec.Command(goBin, "build", "-buildvcs=false", "-o", launcher, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	if self, err = os.Executable(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// helper is the child side of the tests. Modes:
//
//	exit CODE                  exit at once
//	sleep SECONDS              sleep, then exit 0 (SIGINT kills it)
//	print TEXT                 print TEXT and a newline to stdout
//	check-exists PATH          print "exists" or "missing"
//	trap-int DIR DELAY CODE    write DIR/ready (its pid); on every SIGINT append a line to
//	                           DIR/interrupted; DELAY seconds after the first one (the cleanup),
//	                           write DIR/done and exit CODE
//	ignore-int DIR             ignore SIGINT, write DIR/ready (its pid), sleep
//	record-signals DIR         write DIR/ready; append the name of each SIGHUP and SIGUSR1 to
//	                           DIR/signals; exit 0 after SIGUSR1
//
// Every helper that waits gives up after helperLimit, so a failed test leaks nothing for long.
func helper(args []string) int {
	const helperLimit = 20 * time.Second
	arg := func(i int) string { return args[i] }
	switch args[0] {
	case "exit":
		code, _ := strconv.Atoi(arg(1))
		return code
	case "sleep":
		d, _ := strconv.ParseFloat(arg(1), 64)
		time.Sleep(seconds(d))
		return 0
	case "print":
		fmt.Println(arg(1))
		return 0
	case "check-exists":
		if _, err := os.Stat(arg(1)); err == nil {
			fmt.Println("exists")
		} else {
			fmt.Println("missing")
		}
		return 0
	case "trap-int":
		return helperTrapInt(arg(1), arg(2), arg(3), helperLimit)
	case "ignore-int":
		signal.Ignore(syscall.SIGINT)
		writeHelperFile(filepath.Join(arg(1), "ready"), strconv.Itoa(os.Getpid()))
		time.Sleep(helperLimit)
		return 99
	case "record-signals":
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1)
		writeHelperFile(filepath.Join(arg(1), "ready"), strconv.Itoa(os.Getpid()))
		for {
			select {
			case sig := <-sigs:
				appendHelperFile(filepath.Join(arg(1), "signals"), signalName(sig))
				if sig == syscall.SIGUSR1 {
					return 0
				}
			case <-time.After(helperLimit):
				return 99
			}
		}
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", args[0])
	return 98
}

func helperTrapInt(dir, delayArg, codeArg string, limit time.Duration) int {
	delay, _ := strconv.ParseFloat(delayArg, 64)
	code, _ := strconv.Atoi(codeArg)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT)
	writeHelperFile(filepath.Join(dir, "ready"), strconv.Itoa(os.Getpid()))
	var cleanupDone <-chan time.Time
	giveUp := time.After(limit)
	for {
		select {
		case <-sigs:
			appendHelperFile(filepath.Join(dir, "interrupted"), "interrupted")
			if cleanupDone == nil {
				cleanupDone = time.After(seconds(delay))
			}
		case <-cleanupDone:
			writeHelperFile(filepath.Join(dir, "done"), "done")
			return code
		case <-giveUp:
			return 99
		}
	}
}

// writeHelperFile writes through a rename, so the test never reads it half-written.
func writeHelperFile(path, text string) {
	if err := os.WriteFile(path+".part", []byte(text), 0o644); err != nil {
		panic(err)
	}
	if err := os.Rename(path+".part", path); err != nil {
		panic(err)
	}
}

func appendHelperFile(path, line string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	if _, err := f.WriteString(line + "\n"); err != nil {
		panic(err)
	}
}

// proc is a running launcher.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr lockedBuffer
	done   chan struct{}
	code   int
}

// lockedBuffer is stderr, which the test may read while the launcher still writes it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startLauncher(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, cmd: exec.Command(launcher, args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), helperEnv+"=1")
	p.cmd.Stderr = &p.stderr
	// A leftover process holding stderr must not keep Wait from returning when a test fails.
	p.cmd.WaitDelay = time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// wait returns the launcher's exit code, failing the test if it runs longer than timeout.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		p.t.Fatalf("launcher still running after %v; stderr:\n%s", timeout, p.stderr.String())
		return -1
	}
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// runLauncher runs the launcher to completion and returns its exit code and stderr.
func runLauncher(t *testing.T, args ...string) (int, string) {
	t.Helper()
	p := startLauncher(t, args...)
	code := p.wait(10 * time.Second)
	return code, p.stderr.String()
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// readPid waits for a helper's ready file and returns the pid in it.
func readPid(t *testing.T, path string) int {
	t.Helper()
	var pid int
	eventually(t, 5*time.Second, path, func() bool {
		data, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(data)))
		return err == nil
	})
	return pid
}

// procStat returns the state letter and parent pid of pid, ok false once it is gone.
func procStat(pid int) (state string, ppid int, ok bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, false
	}
	// The command name in parentheses may contain spaces; the fields after it do not.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	ppid, _ = strconv.Atoi(fields[1])
	return fields[0], ppid, true
}

// dead tells whether pid has exited (gone, or a zombie waiting for its new parent).
func dead(pid int) bool {
	state, _, ok := procStat(pid)
	return !ok || state == "Z"
}

func readMarker(t *testing.T, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("marker %s: %v", data, err)
	}
	return m
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestExitCodePassthrough(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		argv []string
		want int
	}{
		{"exit 0", []string{self, "exit", "0"}, 0},
		{"exit 3", []string{self, "exit", "3"}, 3},
		{"killed by SIGKILL", []string{"sh", "-c", "kill -KILL $$"}, 137},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			code, stderr := runLauncher(t, append([]string{"run", "--"}, c.argv...)...)
			if code != c.want {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, c.want, stderr)
			}
			if stderr != "" {
				t.Errorf("unexpected stderr:\n%s", stderr)
			}
		})
	}
}

func TestStopSignalInterruptsOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	markerPath := filepath.Join(dir, "marker.json")
	p := startLauncher(t, "run", "--marker", markerPath, "--",
		self, "trap-int", dir, "0.5", "1")
	readPid(t, filepath.Join(dir, "ready"))
	sentAt := time.Now()
	p.signal(syscall.SIGTERM)
	eventually(t, 5*time.Second, "the child's SIGINT", func() bool {
		return fileExists(filepath.Join(dir, "interrupted"))
	})

	// While dbt cleans up, the marker says only that a stop signal came.
	m := readMarker(t, markerPath)
	if m["signal"] != "SIGTERM" {
		t.Errorf("marker signal %v, want SIGTERM", m["signal"])
	}
	receivedAt, err := time.Parse("2006-01-02T15:04:05.000Z07:00", fmt.Sprint(m["received_at"]))
	if err != nil || !strings.HasSuffix(fmt.Sprint(m["received_at"]), "Z") {
		t.Errorf("marker received_at %v: not RFC 3339 UTC with milliseconds (%v)", m["received_at"], err)
	} else if d := receivedAt.Sub(sentAt); d < -time.Second || d > 5*time.Second {
		t.Errorf("marker received_at %v is %v away from the signal", receivedAt, d)
	}
	if _, ok := m["exit_code"]; ok {
		t.Errorf("marker has exit_code before the child exited: %v", m)
	}

	p.signal(syscall.SIGTERM) // must not reach the child as a second SIGINT
	if code := p.wait(5 * time.Second); code != 130 {
		t.Errorf("exit code %d, want 130; stderr:\n%s", code, p.stderr.String())
	}
	if got := readFile(t, filepath.Join(dir, "interrupted")); got != "interrupted\n" {
		t.Errorf("the child got SIGINT %d times, want once", strings.Count(got, "\n"))
	}
	stderr := p.stderr.String()
	for _, want := range []string{
		"kubedbt-launch: SIGTERM received: interrupting dbt (SIGINT to process group ",
		"kubedbt-launch: SIGTERM received: ignored, dbt is already stopping",
		"kubedbt-launch: stopped by SIGTERM: dbt was interrupted and exited 1 after 0.",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}

	m = readMarker(t, markerPath)
	if m["signal"] != "SIGTERM" || m["exit_code"] != 1.0 {
		t.Errorf("final marker %v, want signal SIGTERM and exit_code 1", m)
	}
	if s, _ := m["stopped_after_seconds"].(float64); s < 0.4 || s > 5 {
		t.Errorf("marker stopped_after_seconds %v, want about 0.5", m["stopped_after_seconds"])
	}
}

func TestStopSignalThenSuccessExitsZero(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	markerPath := filepath.Join(dir, "marker.json")
	p := startLauncher(t, "run", "--marker", markerPath, "--", self, "trap-int", dir, "0", "0")
	readPid(t, filepath.Join(dir, "ready"))
	p.signal(syscall.SIGINT)
	if code := p.wait(5 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0; stderr:\n%s", code, p.stderr.String())
	}
	if m := readMarker(t, markerPath); m["signal"] != "SIGINT" || m["exit_code"] != 0.0 {
		t.Errorf("marker %v, want signal SIGINT and exit_code 0", m)
	}
}

func TestNeverExitsBeforeTheChild(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startLauncher(t, "run", "--group-wait", "0", "--", self, "ignore-int", dir)
	pid := readPid(t, filepath.Join(dir, "ready"))
	p.signal(syscall.SIGTERM)
	eventually(t, 5*time.Second, "the stop signal's log line", func() bool {
		return strings.Contains(p.stderr.String(), "interrupting dbt")
	})
	time.Sleep(300 * time.Millisecond) // the child ignores SIGINT: nothing may happen meanwhile
	if !p.running() {
		t.Fatalf("launcher exited while its child was alive; stderr:\n%s", p.stderr.String())
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(5 * time.Second); code != 130 {
		t.Errorf("exit code %d, want 130; stderr:\n%s", code, p.stderr.String())
	}
	if want := "exited 137 after"; !strings.Contains(p.stderr.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, p.stderr.String())
	}
}

func TestForwardsOtherSignals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startLauncher(t, "run", "--", self, "record-signals", dir)
	readPid(t, filepath.Join(dir, "ready"))
	signals := filepath.Join(dir, "signals")
	p.signal(syscall.SIGHUP)
	eventually(t, 5*time.Second, "SIGHUP at the child", func() bool { return fileExists(signals) })
	p.signal(syscall.SIGUSR1)
	if code := p.wait(5 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0; stderr:\n%s", code, p.stderr.String())
	}
	if got := readFile(t, signals); got != "SIGHUP\nSIGUSR1\n" {
		t.Errorf("the child got %q, want SIGHUP then SIGUSR1", got)
	}
}

func TestAfterInterruptRunsAfterStop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "after.out")
	p := startLauncher(t, "run",
		"--after-interrupt", jsonArgv(self, "print", "hello from after-interrupt"),
		"--after-interrupt-output", out,
		"--", self, "trap-int", dir, "0", "1")
	readPid(t, filepath.Join(dir, "ready"))
	p.signal(syscall.SIGTERM)
	if code := p.wait(5 * time.Second); code != 130 {
		t.Errorf("exit code %d, want 130; stderr:\n%s", code, p.stderr.String())
	}
	if got := readFile(t, out); got != "hello from after-interrupt\n" {
		t.Errorf("output %q", got)
	}
	if fileExists(out + ".tmp") {
		t.Errorf("%s.tmp left behind", out)
	}
}

func TestAfterInterruptNotRunWithoutStop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "after.out")
	code, stderr := runLauncher(t, "run",
		"--after-interrupt", jsonArgv(self, "print", "hello"), "--after-interrupt-output", out,
		"--", self, "exit", "0")
	if code != 0 {
		t.Errorf("exit code %d, want 0; stderr:\n%s", code, stderr)
	}
	if fileExists(out) || fileExists(out+".tmp") {
		t.Error("the after-interrupt command ran without a stop signal")
	}
}

func TestAfterInterruptKilledAtTimeout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "after.out")
	sleeperPid := filepath.Join(dir, "sleeper.pid")
	// A shell that waits for a child of its own: the timeout must kill both.
	script := fmt.Sprintf(`echo partial; "$0" sleep 30 & echo $! > %s; wait`, sleeperPid)
	p := startLauncher(t, "run",
		"--after-interrupt", jsonArgv("sh", "-c", script, self),
		"--after-interrupt-output", out, "--after-interrupt-timeout", "0.5",
		"--", self, "trap-int", dir, "0", "1")
	readPid(t, filepath.Join(dir, "ready"))
	p.signal(syscall.SIGTERM)
	start := time.Now()
	if code := p.wait(5 * time.Second); code != 130 {
		t.Errorf("exit code %d, want 130; stderr:\n%s", code, p.stderr.String())
	}
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Errorf("launcher exited %v after the signal, before the 0.5s timeout", took)
	}
	if want := "still running 0.5s after the stop signal: killing it"; !strings.Contains(p.stderr.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, p.stderr.String())
	}
	if fileExists(out) {
		t.Errorf("the output of a killed command was published: %q", readFile(t, out))
	}
	pid := readPid(t, sleeperPid)
	eventually(t, 2*time.Second, "the after-interrupt command's child to die", func() bool {
		return dead(pid)
	})
}

// TestGroupWaitForGrandchild: the child is a shell that dies of the SIGINT at once while its own
// child, in the same process group, takes a while to clean up. The after-interrupt command must
// run only once that grandchild is done.
func TestGroupWaitForGrandchild(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := filepath.Join(dir, "after.out")
	markerPath := filepath.Join(dir, "marker.json")
	// A non-interactive shell starts background jobs with SIGINT ignored; the helper's own
	// handler overrides that, as dbt's would.
	script := `trap 'exit 130' INT; "$0" trap-int "$1" 0.7 0 & wait`
	p := startLauncher(t, "run", "--marker", markerPath,
		"--after-interrupt", jsonArgv(self, "check-exists", filepath.Join(dir, "done")),
		"--after-interrupt-output", out,
		"--", "sh", "-c", script, self, dir)
	readPid(t, filepath.Join(dir, "ready"))
	p.signal(syscall.SIGTERM)
	if code := p.wait(5 * time.Second); code != 130 {
		t.Errorf("exit code %d, want 130; stderr:\n%s", code, p.stderr.String())
	}
	if got := readFile(t, out); got != "exists\n" {
		t.Errorf("the after-interrupt command ran before the grandchild was done (it saw: %q)", got)
	}
	m := readMarker(t, markerPath)
	if m["exit_code"] != 130.0 {
		t.Errorf("marker exit_code %v, want 130 (the shell's)", m["exit_code"])
	}
	// The shell itself exited at once: the wait was for its child, not for it.
	if s, _ := m["stopped_after_seconds"].(float64); s >= 0.6 {
		t.Errorf("marker stopped_after_seconds %v: the shell did not die at once", s)
	}
}

func TestGroupWaitKillsLeftovers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := `trap 'exit 130' INT; "$0" ignore-int "$1" & wait`
	p := startLauncher(t, "run", "--group-wait", "0.3", "--", "sh", "-c", script, self, dir)
	pid := readPid(t, filepath.Join(dir, "ready"))
	p.signal(syscall.SIGTERM)
	if code := p.wait(5 * time.Second); code != 130 {
		t.Errorf("exit code %d, want 130; stderr:\n%s", code, p.stderr.String())
	}
	if want := "still running after 0.3s: killing it"; !strings.Contains(p.stderr.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, p.stderr.String())
	}
	eventually(t, 2*time.Second, "the leftover grandchild to die", func() bool { return dead(pid) })
}

// TestReapsOrphans: a grandchild whose parent exits is reparented to the launcher (a subreaper
// here, PID 1 in a pod), which must reap it.
func TestReapsOrphans(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	orphanPid := filepath.Join(dir, "orphan.pid")
	script := fmt.Sprintf(`("$0" sleep 0.5 & echo $! > %s); exec "$0" trap-int "$1" 0 0`, orphanPid)
	p := startLauncher(t, "run", "--", "sh", "-c", script, self, dir)
	readPid(t, filepath.Join(dir, "ready"))
	pid := readPid(t, orphanPid)
	eventually(t, 2*time.Second, "the orphan to be reparented to the launcher", func() bool {
		_, ppid, ok := procStat(pid)
		return !ok || ppid == p.cmd.Process.Pid
	})
	eventually(t, 3*time.Second, "the orphan to be reaped", func() bool {
		_, _, ok := procStat(pid)
		return !ok
	})
	p.signal(syscall.SIGTERM)
	if code := p.wait(5 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0; stderr:\n%s", code, p.stderr.String())
	}
}

func TestCannotStart(t *testing.T) {
	t.Parallel()
	notExecutable := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notExecutable, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		argv0 string
		want  int
	}{
		{"/nonexistent/kubedbt-dbt", 127},
		{"kubedbt-no-such-command", 127},
		{notExecutable, 126},
	}
	for _, c := range cases {
		t.Run(filepath.Base(c.argv0), func(t *testing.T) {
			t.Parallel()
			code, stderr := runLauncher(t, "run", "--", c.argv0, "build")
			if code != c.want {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, c.want, stderr)
			}
			prefix := "kubedbt-launch: cannot start " + c.argv0 + ": "
			if !strings.HasPrefix(stderr, prefix) || strings.Count(stderr, "\n") != 1 ||
				strings.Count(stderr, c.argv0) != 1 {
				t.Errorf("stderr %q, want one line starting %q", stderr, prefix)
			}
		})
	}
}

func TestInstall(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dest := filepath.Join(dir, "kubedbt-launch")
	code, stderr := runLauncher(t, "install", dest)
	if code != 0 || stderr != "kubedbt-launch: installed "+dest+"\n" {
		t.Fatalf("install: exit code %d, stderr %q", code, stderr)
	}
	info, err := os.Stat(dest)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode() != 0o555 {
		t.Errorf("mode %v, want -r-xr-xr-x", info.Mode())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("install left other files behind: %v", entries)
	}
	if err := exec.Command(dest, "run", "--", "true").Run(); err != nil {
		t.Errorf("the installed copy: %v", err)
	}

	code, stderr = runLauncher(t, "install", filepath.Join(dir, "missing", "kubedbt-launch"))
	if code != 1 || strings.Count(stderr, "\n") != 1 {
		t.Errorf("install into a missing directory: exit code %d, stderr %q", code, stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		args []string
		want string // in the one-line error
	}{
		{"not JSON", []string{"--after-interrupt", "dbt run", "--after-interrupt-output", "/tmp/x"}, "--after-interrupt"},
		{"object", []string{"--after-interrupt", `{"a":1}`, "--after-interrupt-output", "/tmp/x"}, "--after-interrupt"},
		{"empty array", []string{"--after-interrupt", `[]`, "--after-interrupt-output", "/tmp/x"}, "--after-interrupt"},
		{"numbers", []string{"--after-interrupt", `["dbt", 1]`, "--after-interrupt-output", "/tmp/x"}, "--after-interrupt"},
		{"empty", []string{"--after-interrupt", ``, "--after-interrupt-output", "/tmp/x"}, "--after-interrupt"},
		{"no output", []string{"--after-interrupt", `["dbt"]`}, "--after-interrupt-output"},
		{"negative wait", []string{"--group-wait", "-1"}, "--group-wait"},
		{"unknown flag", []string{"--bogus"}, "bogus"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			args := append(append([]string{"run"}, c.args...), "--", "true")
			code, stderr := runLauncher(t, args...)
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if !strings.HasPrefix(stderr, "kubedbt-launch: ") || !strings.Contains(stderr, c.want) ||
				strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr %q, want one line naming %s", stderr, c.want)
			}
		})
	}
	t.Run("no command", func(t *testing.T) {
		t.Parallel()
		if code, stderr := runLauncher(t, "run", "--"); code != 2 || !strings.Contains(stderr, "no command") {
			t.Errorf("exit code %d, stderr %q", code, stderr)
		}
	})
}

func TestWriteTerminationLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "termination-log")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	writeTerminationLog(path, "kubedbt-launch: one")
	writeTerminationLog(path, "kubedbt-launch: two")
	if got := readFile(t, path); got != "kubedbt-launch: one\nkubedbt-launch: two\n" {
		t.Errorf("termination log %q", got)
	}
	missing := filepath.Join(dir, "missing")
	writeTerminationLog(missing, "kubedbt-launch: three")
	if fileExists(missing) {
		t.Error("writeTerminationLog created a missing file")
	}
}

func jsonArgv(argv ...string) string {
	data, err := json.Marshal(argv)
	if err != nil {
		panic(err)
	}
	return string(data)
}
