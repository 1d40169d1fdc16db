"""The layers of docs/architecture.md §3, checked on every import of the source.

Every import counts (module level, inside functions, under ``TYPE_CHECKING``;
tests/import_graph.py). A failure names each offending import with its file and line,
and for a cycle the whole closed chain.
"""

from __future__ import annotations

from tests.import_graph import Import, cycle_path, cycles, graph, internal_edges, modules

#: Import cycles tolerated, each with the reason; keep it empty.
KNOWN_CYCLES: dict[tuple[str, ...], str] = {}

#: The executor's folders from the top layer down (docs/architecture.md §3). A module may
#: import its own folder and any lower layer, never a higher one. ``stack`` is the
#: composition root: it builds the components of the layer below it from ``config``, and
#: only the layers above it use it.
EXECUTOR_LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("orchestration",),
    ("api",),
    ("execution",),
    ("stack",),
    ("deploy",),  # renders manifests from the sandbox backend's Pod policy and queue names
    ("jobs", "storage", "datalake", "sandbox"),
    ("config", "keys"),
)
#: The only imports allowed between folders of the same layer, and why.
EXECUTOR_SIBLINGS: dict[tuple[str, str], str] = {
    ("datalake", "storage"): "a table's files live in an object store",
    ("datalake", "jobs"): "vacuum keeps every version a job ran on (MetadataStore)",
}

#: The SDK's faces: they load the trusted engine and the notebook tools lazily (in
#: ``__getattr__``, or for type checkers only), never on import (the sandbox imports them).
SDK_LAZY_FACES = ("pitwall", "pitwall.events")
SDK_PARTS = ("engine", "sandbox", "notebook")


def _chains(edges: list[Import]) -> str:
    return "\n".join(f"  {edge.where()}" for edge in edges)


def _executor_folder(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(package)"


def _sdk_part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SDK_PARTS else "(top level)"


def test_no_module_import_cycle() -> None:
    adjacency = graph(internal_edges())
    found = {tuple(members): members for members in cycles(adjacency)}
    unexpected = {key: members for key, members in found.items() if key not in KNOWN_CYCLES}
    report = "\n".join(
        f"cycle among {', '.join(members)}; one closed chain:\n"
        f"{_chains(cycle_path(adjacency, members))}"
        for members in unexpected.values())
    assert not unexpected, ("import cycles (docs/architecture.md §3: dependencies point one "
                            f"way; break each by moving the shared part down):\n{report}")
    stale = sorted(set(KNOWN_CYCLES) - set(found))
    assert not stale, f"KNOWN_CYCLES lists cycles that are gone; remove them: {stale}"


def test_executor_layers_import_only_downwards() -> None:
    rank = {folder: i for i, layer in enumerate(EXECUTOR_LAYERS) for folder in layer}
    executor = [m for m in modules() if m.startswith("pitwall_executor.")]
    unplaced = sorted({f for m in executor if (f := _executor_folder(m)) not in rank})
    assert not unplaced, (f"executor folders or modules in no layer: {unplaced}; add them to "
                          "EXECUTOR_LAYERS and to docs/architecture.md §3")
    wrong = []
    for edge in internal_edges():
        if not (edge.source.startswith("pitwall_executor.")
                and edge.target.startswith("pitwall_executor.")):
            continue
        src, dst = _executor_folder(edge.source), _executor_folder(edge.target)
        if src == dst or rank[src] < rank[dst] or (src, dst) in EXECUTOR_SIBLINGS:
            continue
        wrong.append(edge)
    assert not wrong, ("imports against the executor's layers (top -> bottom: "
                       + " -> ".join("/".join(layer) for layer in EXECUTOR_LAYERS)
                       + f"; docs/architecture.md §3):\n{_chains(wrong)}")


def test_the_sdk_imports_no_backend_and_the_server_only_its_embedded_stack() -> None:
    wrong = [edge for edge in internal_edges() if (
        edge.source.split(".")[0] == "pitwall"
        and edge.target.split(".")[0] in ("pitwall_executor", "pitwall_server")
    ) or (
        edge.source.split(".")[0] == "pitwall_server"
        and edge.target.startswith("pitwall_executor")
        and edge.source != "pitwall_server.embedded"
    )]
    assert not wrong, ("pitwall imports neither backend package; pitwall_server reaches "
                       "pitwall_executor only through pitwall_server/embedded.py (the "
                       f"embedded mode; docs/architecture.md §3, §7):\n{_chains(wrong)}")


def test_the_backend_never_imports_the_notebook_tools() -> None:
    wrong = [edge for edge in internal_edges()
             if edge.source.split(".")[0] in ("pitwall_executor", "pitwall_server")
             and (edge.target == "pitwall.notebook"
                  or edge.target.startswith("pitwall.notebook."))]
    assert not wrong, ("pitwall.notebook is kernel-side (plotly, ipywidgets, httpx); the "
                       f"backend uses the engine and the wire models:\n{_chains(wrong)}")


def test_sdk_parts_import_in_their_direction() -> None:
    """Top level (strategy API, wire formats) <- engine/ and sandbox/ <- notebook/.

    engine/ (trusted) and sandbox/ (untrusted) share only what the top level holds
    (frames, lockstep, models...), never each other; neither uses notebook/.
    """
    wrong = []
    for edge in internal_edges():
        if edge.source.split(".")[0] != "pitwall" or edge.target.split(".")[0] != "pitwall":
            continue
        src, dst = _sdk_part(edge.source), _sdk_part(edge.target)
        if src in (dst, "notebook") or dst == "(top level)":
            continue
        lazy = edge.source in SDK_LAZY_FACES and (edge.deferred or edge.type_only)
        if src == "(top level)" and lazy and dst in ("engine", "notebook"):
            continue
        wrong.append(edge)
    assert not wrong, ("imports against the SDK's parts (docs/architecture.md §3):\n"
                       f"{_chains(wrong)}")
