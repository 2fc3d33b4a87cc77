"""make project-image: a user's dbt project built into an image on top of kubedbt/dbt.

    .venv/bin/python images/project/build.py --project DIR --image NAME:TAG [--base IMAGE]
        [--namespace NS] [--sidecar-image IMAGE] [--profile-conn-id ID]
        [--ignore-checks [YES/NO]] [--keep-dbt-packages [YES/NO]]

1. Reads dbt_project.yml and the project's profiles.yml and checks that nothing writes where the
   pod cannot (kubedbt.core.project); a finding stops the build with its fix (--ignore-checks
   goes on). Credentials written into profiles.yml as they are get a warning: the image carries
   them.
2. Stages the project without target/, logs/ and its packages directory as the build context, and
   builds images/project/project.Dockerfile: `dbt deps` in a builder stage when the project has
   packages.yml or dependencies.yml (--keep-dbt-packages uses the project's own instead, for
   packages this machine cannot download), the project root-owned at /usr/app/<name>.
3. Copies the image into the local cluster's containerd, as tests/cluster/images.sh does
   (CLUSTER=kind: `kind load docker-image`), or says why not.
4. Prints the DAG that runs it on stdout; everything else goes to stderr.

Every command runs as an argument list: no value given here ever reaches a shell.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubedbt.core import project as checks
from kubedbt.core.project import Check, DagOptions, Project, ProjectError

HERE = Path(__file__).resolve().parent
DOCKERFILE = HERE / "project.Dockerfile"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
# Loads an image into the kind cluster (CLUSTER=kind), through the restricted-host docker if needed.
KIND_LOAD = HERE.parents[1] / "tests" / "cluster" / "kind.sh"
# Never part of the image: dbt's output of local runs, and what a checkout carries besides dbt.
LEFT_OUT = frozenset({"target", "logs", ".git", ".venv", "venv", "__pycache__", ".user.yml"})
# Files whose text may materialise a model as an external file (dbt-duckdb).
MODEL_SUFFIXES = (".sql", ".yml", ".yaml", ".py")


def log(message: str) -> None:
    """A line for the person running the build (stderr: stdout carries only the DAG)."""
    print(f"[project-image] {message}", file=sys.stderr, flush=True)


class BuildError(Exception):
    """The build stopped; the message says why and what to do."""


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--project", required=True, help="the dbt project directory (PROJECT)")
    parser.add_argument("--image", required=True, help="the image to build, name:tag (IMAGE)")
    parser.add_argument("--base", default="kubedbt/dbt:dev", help="the dbt image to build on")
    parser.add_argument("--namespace", default="kubedbt-demo", help="where the chart is installed")
    parser.add_argument("--sidecar-image", default="kubedbt/sidecar:dev")
    parser.add_argument("--profile-conn-id", default="", help="an Airflow connection for dbt")
    # make passes the variables as they are ("" when unset); main reads them as yes or no.
    parser.add_argument(
        "--ignore-checks", nargs="?", const="1", default="", help="build despite findings"
    )
    parser.add_argument(
        "--keep-dbt-packages",
        nargs="?", const="1", default="",
        help="vendor the project's packages as they are",
    )  # fmt: skip
    return parser.parse_args(argv)


def _text(path: Path, *, replace: bool = False) -> str:
    """A file of the project as text (UTF-8, as dbt reads it), or an error naming it."""
    try:
        return path.read_text(encoding="utf-8", errors="replace" if replace else "strict")
    except UnicodeDecodeError as e:
        raise ProjectError(
            str(path), f"is not UTF-8 text (byte {e.start}): dbt reads UTF-8, save it as such"
        ) from e
    except OSError as e:
        if path.is_symlink() and not path.exists():
            raise ProjectError(str(path), "is a broken or looping symbolic link") from e
        raise ProjectError(str(path), f"cannot be read: {e.strerror or e}") from e


def _read(path: Path) -> str | None:
    return _text(path) if path.is_file() else None


def _profiles_dir(root: Path) -> str | None:
    """Where the project keeps profiles.yml, relative to it: itself or profiles/."""
    for sub in (".", "profiles"):
        if (root / sub / "profiles.yml").is_file():
            return sub
    return None


def _model_texts(root: Path, skip: set[str]) -> list[str]:
    texts = []
    for directory, subdirectories, files in os.walk(root):
        if Path(directory) == root:  # never walk into .venv, .git, target and the like
            subdirectories[:] = [d for d in subdirectories if d not in skip]
        for name in files:
            if name.endswith(MODEL_SUFFIXES):
                texts.append(_text(Path(directory) / name, replace=True))
    return texts


def check_project(root: Path, *, profile_conn_id: str) -> tuple[Project, Check, str | None]:
    """Read and check the project; return it, what the checks say and its profiles directory."""
    if not (root / "dbt_project.yml").is_file():
        raise ProjectError("PROJECT", f"{root} has no dbt_project.yml: it is not a dbt project")
    text = _text(root / "dbt_project.yml")
    project = checks.read_project(text)
    check = Check(notes=checks.project_notes(text))
    for name in checks.PACKAGE_FILES:
        packages = _read(root / name)
        for local in checks.local_packages(packages or "", name):
            if not (root / local / "dbt_project.yml").is_file():
                raise ProjectError(name, f"local package {local!r} has no dbt_project.yml")
    profiles_dir = _profiles_dir(root)
    where = "profiles.yml" if profiles_dir in (None, ".") else f"{profiles_dir}/profiles.yml"
    profiles_text = _read(root / where) if profiles_dir else None
    # The file goes into the image even when profile_conn_id means dbt does not use it.
    check.warnings += checks.literal_secrets(profiles_text, where)
    if profile_conn_id:
        check.notes.append(
            f"profile_conn_id={profile_conn_id!r}: dbt connects with that Airflow connection; "
            "the project's profiles.yml (if any) is not used"
        )
        return project, check, profiles_dir
    skip = left_out(project, keep_packages=False)
    external = checks.uses_external_materialization(_model_texts(root, skip))
    check.extend(checks.check_profiles(profiles_text, project, uses_external=external, where=where))
    home_profiles = Path.home() / ".dbt" / "profiles.yml"
    if profiles_text is None and home_profiles.is_file():
        check.notes.append(
            f"{home_profiles} is not copied into the image: copy the profile into the project's "
            "own profiles.yml (with paths under /kubedbt) to use it"
        )
    return project, check, profiles_dir


def report(check: Check, *, ignore: bool) -> None:
    """Print the notes and findings; stop on findings unless told to go on."""
    for note in check.notes:
        log(f"note: {note}")
    for warning in check.warnings:
        log(f"WARNING {warning}")
    for finding in check.findings:
        log(f"FINDING {finding.where}: {finding.problem}\n    fix: {finding.fix}")
    if check.findings and not ignore:
        raise BuildError(
            f"{len(check.findings)} finding(s) above: fix them, or build anyway with "
            "IGNORE_CHECKS=1 (--ignore-checks) if the DAG mounts a writable volume there"
        )


def _docker() -> str:
    # Like tests/cluster/images.sh: the distribution's client matches the daemon it starts.
    found = os.environ.get("DOCKER") or shutil.which("/usr/bin/docker") or shutil.which("docker")
    if not found:
        raise BuildError("docker is not installed")
    if subprocess.run([found, "info"], capture_output=True, check=False).returncode != 0:
        raise BuildError(
            f"docker ({found}) cannot reach its daemon: on the local cluster's machine "
            "`make images` starts it"
        )
    return found


def check_links(root: Path, skip: set[str]) -> None:
    """Refuse links the copy would follow forever (a loop) or could not follow (broken)."""
    for directory, subdirectories, files in os.walk(root):
        here = Path(directory)
        if here == root:
            subdirectories[:] = [d for d in subdirectories if d not in skip]
        for name in (*subdirectories, *files):
            path = here / name
            if not path.is_symlink():
                continue
            try:
                target = path.resolve(strict=True)
            except (OSError, RuntimeError) as e:  # RuntimeError: a loop, before Python 3.13
                raise ProjectError(
                    str(path), f"is a broken or looping symbolic link ({e}): remove it or fix it"
                ) from e
            parent = here.resolve()
            if target.is_dir() and (target == parent or target in parent.parents):
                raise ProjectError(
                    str(path),
                    f"links to {target}, a directory it is in, so copying the project (which "
                    "follows links) would never end: remove the link",
                )


def left_out(project: Project, *, keep_packages: bool) -> set[str]:
    """The top-level names of the project that stay out of the image."""
    return set(LEFT_OUT) | (set() if keep_packages else {project.packages_install_path})


def _stage(root: Path, context: Path, project: Project, *, keep_packages: bool) -> list[str]:
    """Copy the project into the build context as project/; return what was left out.

    main has run check_links over the same names first.
    """
    skip = left_out(project, keep_packages=keep_packages)
    top = root.resolve()

    def ignored(directory: str, names: list[str]) -> set[str]:
        if Path(directory).resolve() != top:
            return set()
        return {name for name in names if name in skip}

    skipped = sorted(name for name in os.listdir(root) if name in skip)
    nested = project.packages_install_path
    # Symlinks are followed: a local package dbt deps linked in becomes a copy.
    try:
        shutil.copytree(root, context / "project", ignore=ignored)
    except shutil.Error as e:  # one (source, destination, why) per file that failed
        failed = [f"{source}: {why}" for source, _, why in e.args[0]]
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        raise BuildError(
            f"cannot copy {'; '.join(failed[:3])}{more}: make the files readable, or move them "
            "out of the project"
        ) from e
    except OSError as e:
        raise BuildError(f"cannot copy {e.filename or root}: {e.strerror or e}") from e
    # A nested packages directory (packages-install-path: deps/packages) goes after the copy.
    if not keep_packages and "/" in nested:
        shutil.rmtree(context / "project" / nested, ignore_errors=True)
        skipped.append(nested)
    shutil.copy(DOCKERFILE, context / "Dockerfile")
    return skipped


def build(
    docker: str,
    root: Path,
    project: Project,
    *,
    image: str,
    base: str,
    profiles_dir: str | None,
    keep_packages: bool,
) -> float:
    """Build the image; return how long it took."""
    has_packages = any((root / name).is_file() for name in checks.PACKAGE_FILES)
    if keep_packages and not (root / project.packages_install_path).is_dir():
        raise BuildError(
            f"KEEP_DBT_PACKAGES is set but {root} has no {project.packages_install_path}/: "
            "run `dbt deps` in the project first"
        )
    packages = "keep" if keep_packages else ("deps" if has_packages else "none")
    in_image = project.image_dir
    if profiles_dir not in (None, "."):
        in_image = f"{in_image}/{profiles_dir}"
    with tempfile.TemporaryDirectory(prefix="kubedbt-project-") as context:
        skipped = _stage(root, Path(context), project, keep_packages=keep_packages)
        if skipped:
            log(f"left out of the image: {', '.join(skipped)}")
        if packages == "deps":
            log("packages: dbt deps runs in the build, with the base image's dbt")
        elif packages == "keep":
            log(f"packages: the project's own {project.packages_install_path}/, as it is")
        command = [
            docker, "build", "--network", "host",
            "--build-arg", f"BASE_IMAGE={base}",
            "--build-arg", f"PROJECT_NAME={project.name}",
            "--build-arg", f"PROFILES_DIR={in_image}",
            "--build-arg", f"PACKAGES={packages}",
            "--build-arg", f"PACKAGES_DIR={project.packages_install_path}",
            "--tag", image, context,
        ]  # fmt: skip
        log(f"building {image} from {root} on {base}")
        started = time.monotonic()
        # BuildKit skips the stages it does not need and caches well; the output goes to stderr.
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        done = subprocess.run(command, stdout=sys.stderr, env=env, check=False)
        seconds = time.monotonic() - started
    if done.returncode != 0:
        hint = ""
        if packages == "deps":
            hint = (
                " If dbt deps could not download a package (the build may have no internet), "
                "run `dbt deps` in the project where it can and build again with "
                "KEEP_DBT_PACKAGES=1 (--keep-dbt-packages)."
            )
        raise BuildError(f"docker build failed (exit {done.returncode}), see above.{hint}")
    log(f"built {image} in {seconds:.1f}s")
    return seconds


def import_into_cluster(docker: str, image: str) -> str:
    """Make the image available to the local cluster, which cannot pull it; say what happened."""
    if os.environ.get("CLUSTER", "local") == "kind":
        started = time.monotonic()
        subprocess.run([str(KIND_LOAD), "load", image], stdout=sys.stderr, check=True)
        return f"loaded into the kind cluster kubedbt in {time.monotonic() - started:.1f}s"
    ctr = shutil.which("ctr")
    k8s = [ctr or "ctr", "--address", CONTAINERD_SOCKET, "--namespace", "k8s.io"]
    if not ctr or subprocess.run([*k8s, "version"], capture_output=True).returncode != 0:
        return (
            "not imported: the local cluster is not running (its containerd is not reachable); "
            "for another cluster, push the image to a registry it pulls from"
        )
    name = checks.containerd_name(image)
    image_id = subprocess.run(
        [docker, "image", "inspect", "--format", "{{.Id}}", image],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    label = f"kubedbt.docker-id={image_id}"
    listed = subprocess.run(
        [*k8s, "images", "ls", f"name=={name}"], capture_output=True, text=True, check=True
    )
    if label in listed.stdout:
        return f"already in the local cluster's containerd as {name}"
    started = time.monotonic()
    # docker save | ctr images import -, as two processes joined by a pipe (no shell).
    save = subprocess.Popen([docker, "save", image], stdout=subprocess.PIPE)
    assert save.stdout is not None
    load = subprocess.Popen(
        [*k8s, "images", "import", "-"], stdin=save.stdout, stdout=subprocess.DEVNULL
    )
    save.stdout.close()  # only ctr reads it now: if ctr dies, docker save stops too
    if load.wait() != 0 or save.wait() != 0:
        raise BuildError(
            f"copying {image} into containerd failed (docker save exit {save.wait()}, "
            f"ctr import exit {load.returncode})"
        )
    subprocess.run([*k8s, "images", "label", name, label], stdout=subprocess.DEVNULL, check=True)
    seconds = time.monotonic() - started
    return f"imported into the local cluster's containerd as {name} in {seconds:.1f}s"


def main(argv: list[str] | None = None) -> int:
    """Check, build, import, print the DAG.

    Exit status: 0 on success, 1 on findings or a failed build, 2 on bad input.
    """
    args = _arguments(argv)
    try:
        if not args.project:
            raise ProjectError(
                "PROJECT", "is not set: make project-image PROJECT=dir IMAGE=name:tag"
            )
        image = checks.image_reference(args.image)
        for parameter, value in (("BASE", args.base), ("SIDECAR_IMAGE", args.sidecar_image)):
            checks.image_reference(value, parameter=parameter, digest=True)
        ignore = checks.flag(args.ignore_checks, "IGNORE_CHECKS")
        keep_packages = checks.flag(args.keep_dbt_packages, "KEEP_DBT_PACKAGES")
        root = Path(args.project).expanduser()
        if not root.is_dir():
            raise ProjectError("PROJECT", f"{root} is not a directory")
        project, check, profiles_dir = check_project(root, profile_conn_id=args.profile_conn_id)
        options = DagOptions(
            project=project,
            image=image,
            namespace=args.namespace,
            sidecar_image=args.sidecar_image,
            base_image=args.base,
            profile_conn_id=args.profile_conn_id or None,
            needs_connection=profiles_dir is None,
        )
        check_links(root, left_out(project, keep_packages=keep_packages))
        report(check, ignore=ignore)
        docker = _docker()
        build(docker, root, project, image=image, base=args.base, profiles_dir=profiles_dir,
              keep_packages=keep_packages)  # fmt: skip
        log(import_into_cluster(docker, image))
    except ProjectError as e:
        log(f"ERROR {e}")
        return 2
    except (BuildError, subprocess.CalledProcessError) as e:
        log(f"ERROR {e}")
        return 1
    dag = checks.render_dag(options)
    log("the DAG that runs it (stdout): save it in your DAGs folder, or paste its "
        "DbtJobOperator call into a DAG of yours")  # fmt: skip
    sys.stdout.write(dag)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
