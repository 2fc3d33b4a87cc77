// Command kubedbt-launch is PID 1 of the dbt container of a kubedbt pod.
//
// Without it, dbt itself is PID 1. The kernel delivers to PID 1 only the signals it has a handler
// for, and dbt handles SIGINT (KeyboardInterrupt) but not SIGTERM, so when the pod is deleted or
// evicted the kubelet's SIGTERM does nothing and dbt is SIGKILLed at the end of the grace period:
// it cannot cancel its warehouse queries or write run_results.json. The launcher turns the first
// SIGTERM into the SIGINT dbt expects and then waits for dbt to finish stopping.
//
// The user's image is not rebuilt. Like Tekton's and Argo's entrypoints, the static binary ships in
// the kubedbt sidecar image; an init container copies it into an emptyDir shared with the dbt
// container (`kubedbt-launch install DEST`), and the dbt container's command becomes
// `DEST run [flags] -- dbt ...`. It is static (CGO_ENABLED=0), so it runs on any base image.
//
//	kubedbt-launch install DEST
//	kubedbt-launch run [--marker PATH] [--after-interrupt JSON --after-interrupt-output PATH]
//	                   [--after-interrupt-timeout SECONDS] [--group-wait SECONDS] -- ARGV...
//
// run starts ARGV (looked up on PATH, never through a shell) in its own process group and then:
//
//   - reaps every process (it is PID 1, and a child subreaper when it is not), so orphans left by
//     dbt's adapters do not pile up as zombies;
//   - on the first SIGTERM or SIGINT writes the --marker file, so whoever reads the run's outputs
//     (the results sidecar) knows the run was stopped, and sends SIGINT to the child's process
//     group. Later SIGTERMs and SIGINTs are only logged: a second SIGINT would abort dbt's cleanup
//     (cancelling queries, writing run_results). SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH
//     are forwarded to the group unchanged;
//   - when the child exits without a stop signal, exits with its code at once (128+N when it was
//     killed by signal N), like tini;
//   - when the child exits after a stop signal, waits up to --group-wait seconds for the rest of
//     its process group (a wrapper such as `sh -c` may die of the SIGINT while dbt, its child, is
//     still writing its results), SIGKILLs whatever is left, runs the --after-interrupt argv if
//     one was given (its stdout becomes --after-interrupt-output only if it exits 0; its process
//     group is killed --after-interrupt-timeout seconds after the stop signal, and it is skipped
//     if that time has passed), completes the marker with dbt's exit code and how long it took to
//     stop, writes one line to /dev/termination-log, and exits 130 (0 if dbt still succeeded).
//
// The launcher never exits while the child is alive, and every wait after the stop signal is
// bounded, so the kubelet's SIGKILL at the end of the grace period remains the last word.
//
// Exit codes of run: the child's code; 130 or 0 after a stop signal; 2 for a usage error; 127 when
// ARGV cannot be found and 126 when it cannot be executed.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

const usage = `usage:
  kubedbt-launch install DEST
  kubedbt-launch run [--marker PATH] [--after-interrupt JSON --after-interrupt-output PATH]
                     [--after-interrupt-timeout SECONDS] [--group-wait SECONDS] -- ARGV...
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "install":
		os.Exit(installCommand(os.Args[2:]))
	case "run":
		opts, err := parseRunArgs(os.Args[2:])
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(os.Stderr, usage)
			os.Exit(0)
		}
		if err != nil {
			logf("%v", err)
			os.Exit(2)
		}
		os.Exit(run(opts))
	default:
		logf("unknown command %q", os.Args[1])
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
}

// logf writes one line to stderr, which the container runtime collects next to dbt's output.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kubedbt-launch: "+format+"\n", args...)
}

func installCommand(args []string) int {
	if len(args) != 1 || args[0] == "" {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	if err := install(args[0]); err != nil {
		logf("install: %v", err)
		return 1
	}
	logf("installed %s", args[0])
	return 0
}

// install copies the running executable to dest. The copy is written next to dest and renamed
// over it, so a container that starts while an init container is still copying never executes
// half a binary.
func install(dest string) error {
	src, err := os.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	defer src.Close()
	return writeFileAtomic(dest, src, 0o555)
}

// runOptions are the flags of `run`; durations are in seconds, as the pod spec writes them.
type runOptions struct {
	marker                string
	afterInterrupt        []string
	afterInterruptOutput  string
	afterInterruptTimeout float64
	groupWait             float64
	argv                  []string
}

// parseRunArgs parses `run`'s flags and ARGV. Errors are one line, naming the flag at fault.
func parseRunArgs(args []string) (runOptions, error) {
	var opts runOptions
	var afterInterrupt string
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	// The flag package's own messages come with the full usage; ours are one line.
	fs.SetOutput(io.Discard)
	fs.StringVar(&opts.marker, "marker", "", "JSON file written when a stop signal arrives")
	fs.StringVar(&afterInterrupt, "after-interrupt", "", "JSON array: argv run after an interrupted run")
	fs.StringVar(&opts.afterInterruptOutput, "after-interrupt-output", "", "file for its stdout")
	fs.Float64Var(&opts.afterInterruptTimeout, "after-interrupt-timeout", 20, "seconds after the stop signal by which it must be done")
	fs.Float64Var(&opts.groupWait, "group-wait", 10, "seconds to wait for the child's process group")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return opts, err
		}
		return opts, fmt.Errorf("run: %v", err)
	}
	opts.argv = fs.Args()
	if len(opts.argv) == 0 || opts.argv[0] == "" {
		return opts, errors.New("run: no command given (kubedbt-launch run [flags] -- ARGV...)")
	}
	if flagSet(fs, "after-interrupt") {
		argv, err := parseArgv(afterInterrupt)
		if err != nil {
			return opts, fmt.Errorf("run: --after-interrupt: %v", err)
		}
		if opts.afterInterruptOutput == "" {
			return opts, errors.New("run: --after-interrupt needs --after-interrupt-output")
		}
		opts.afterInterrupt = argv
	}
	if opts.afterInterruptTimeout < 0 {
		return opts, errors.New("run: --after-interrupt-timeout must not be negative")
	}
	if opts.groupWait < 0 {
		return opts, errors.New("run: --group-wait must not be negative")
	}
	return opts, nil
}

// flagSet tells whether the flag was given, so that an empty value is an error rather than
// silently no command.
func flagSet(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// parseArgv decodes a non-empty JSON array of strings whose first element names a program.
func parseArgv(s string) ([]string, error) {
	var argv []string
	dec := json.NewDecoder(strings.NewReader(s))
	if err := dec.Decode(&argv); err != nil {
		return nil, fmt.Errorf("want a JSON array of strings: %v", err)
	}
	if dec.More() {
		return nil, errors.New("want a single JSON array of strings")
	}
	if argv == nil { // null
		return nil, errors.New("want a JSON array of strings, got null")
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("want a non-empty JSON array whose first string names a program")
	}
	return argv, nil
}
