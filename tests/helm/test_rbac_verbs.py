"""The chart's Roles grant exactly the verbs kubedbt's code calls, derived from the code.

Every Kubernetes call kubedbt makes names a generated client method (`create_namespaced_job`,
`list_namespaced_config_map`, `read_namespaced_pod_log`...), whose name says the verb and the
resource. The test reads the source (ast), starting from the modules an identity runs:
- the launcher: the operator and the trigger (kubedbt.airflow) and the io modules they use;
- the results uploader: the sidecar's entry point and kubedbt.io.uploader.
It follows the RunClient methods those modules call, collects the client methods referenced on
the way, and turns each into (API group, resource, verb). A list method that reaches a watch
(RunClient.watch sends watch=True) also needs `watch`. The result must equal the rendered Role:
a verb the code calls and the Role lacks would fail in a cluster; a verb the Role grants and no
code calls is a right nobody needs.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

from tests.helm.conftest import Helm
from tests.helm.test_chart import render

PACKAGE = Path(__file__).parents[2] / "operator" / "kubedbt"
RUN_CLIENT = PACKAGE / "io" / "kube.py"
# Where each identity's code starts; the io and airflow modules they import are followed.
LAUNCHER_ROOTS = sorted((PACKAGE / "airflow").glob("*.py"))
UPLOADER_ROOTS = [PACKAGE / "sidecar.py"]
# Only these layers talk to the cluster (kubedbt.core is pure: an import-linter contract).
TALKING = ("kubedbt.io", "kubedbt.airflow")

API_METHOD = re.compile(r"^(create|read|list|patch|replace|delete)_namespaced_([a-z_]+?)(_log)?$")
VERBS = {"create": "create", "read": "get", "list": "list", "patch": "patch", "delete": "delete"}
VERBS["replace"] = "update"
RESOURCES = {"job": ("batch", "jobs"), "pod": ("", "pods"), "config_map": ("", "configmaps")}
RESOURCES["event"] = ("", "events")
RESOURCES["secret"] = ("", "secrets")
# Functions that send watch=True with the list method they are given.
WATCHERS = {"watch", "_until_empty"}

Permission = tuple[str, str, str]  # (API group, resource, verb)


def _functions(tree: ast.AST) -> dict[str, ast.AST]:
    return {
        node.name: node
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }


def _attributes(node: ast.AST) -> set[str]:
    return {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def _called_names(node: ast.AST) -> set[str]:
    """Names of functions called in `node`, as `f(...)` or `x.f(...)`."""
    names = set()
    for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
        if isinstance(call.func, ast.Attribute):
            names.add(call.func.attr)
        elif isinstance(call.func, ast.Name):
            names.add(call.func.id)
    return names


def _watched(node: ast.AST, functions: dict[str, ast.AST]) -> set[str]:
    """List methods that reach a watch in `node`: those referenced in a function that calls a
    watcher, including through a helper called among the watcher's arguments."""
    watched = set()
    for function in (
        n for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    ):
        if not WATCHERS & _called_names(function):
            continue
        scope = {*_attributes(function)}
        for helper in _called_names(function) & set(functions):
            scope |= _attributes(functions[helper])
        watched |= {name for name in scope if name.startswith("list_namespaced_")}
    return watched


def _permission(method: str, *, watch: bool = False) -> Permission:
    match = API_METHOD.match(method)
    assert match, method
    action, kind, log = match.groups()
    group, resource = RESOURCES[kind]
    if log:
        return (group, f"{resource}/log", "get")
    return (group, resource, "watch" if watch else VERBS[action])


def _module_path(dotted: str) -> Path | None:
    parts = dotted.split(".")[1:]
    for candidate in (
        PACKAGE.joinpath(*parts).with_suffix(".py"),
        PACKAGE.joinpath(*parts, "__init__.py"),
    ):
        if candidate.exists():
            return candidate
    return None


def _imported(tree: ast.AST) -> set[str]:
    """kubedbt modules of the talking layers a module imports."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith(TALKING)}


def modules_of(roots: Iterable[Path]) -> set[Path]:
    """The roots and every io or airflow module they import, transitively."""
    found: set[Path] = set()
    pending = set(roots)
    while pending:
        path = pending.pop()
        found.add(path)
        for dotted in _imported(ast.parse(path.read_text())):
            module = _module_path(dotted)
            if module is not None and module not in found:
                pending.add(module)
    return found


def derive(roots: Iterable[Path]) -> set[Permission]:
    """What the code starting at `roots` calls, through the RunClient functions it uses."""
    client_functions = _functions(ast.parse(RUN_CLIENT.read_text()))
    trees = [ast.parse(path.read_text()) for path in modules_of(roots) - {RUN_CLIENT}]
    functions = {name: f for tree in trees for name, f in _functions(tree).items()}

    def used(node: ast.AST) -> set[str]:
        return (_attributes(node) | _called_names(node)) & set(client_functions)

    reached: set[str] = set()
    pending = {name for tree in trees for name in used(tree)}
    while pending:
        name = pending.pop()
        reached.add(name)
        pending |= used(client_functions[name]) - reached
    referenced = {name for tree in trees for name in _attributes(tree)}
    watched = {name for tree in trees for name in _watched(tree, functions)}
    for name in reached:
        referenced |= _attributes(client_functions[name])
        watched |= _watched(client_functions[name], client_functions)

    permissions = {_permission(m) for m in referenced if API_METHOD.match(m)}
    return permissions | {_permission(m, watch=True) for m in watched}


def granted(role: dict[str, object]) -> set[Permission]:
    rules = role["rules"]
    assert isinstance(rules, list)
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_launcher_role_grants_what_the_operator_and_trigger_call(helm: Helm) -> None:
    used = derive(LAUNCHER_ROOTS)
    role = render(helm)["Role", "kubedbt-launcher"]
    assert granted(role) == used
    # The derivation must find these, so that a blind spot in it cannot pass unnoticed.
    assert {PACKAGE / "io" / m for m in ("launch.py", "watch.py", "informer.py")} <= modules_of(
        LAUNCHER_ROOTS
    )
    assert {
        ("batch", "jobs", "create"),
        ("batch", "jobs", "watch"),
        ("", "pods/log", "get"),
    } <= used


def test_the_uploader_role_grants_what_the_sidecar_calls(helm: Helm) -> None:
    used = derive(UPLOADER_ROOTS)
    assert used == {("", "configmaps", "patch")}
    assert granted(render(helm)["Role", "kubedbt-results-uploader"]) == used
