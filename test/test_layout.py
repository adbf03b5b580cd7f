"""The package layout docs/architecture.md describes: one home per concern, no import circles."""

import ast
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ('emotion_ros', 'training')


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob('*.py'))}


def _imports(name: str, path: Path, known: Set[str]) -> Set[str]:
    """Project modules ``name`` imports anywhere in its file (also inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == '__init__.py'
    found: Set[str] = set()
    for node in ast.walk(tree):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = name.split('.') if is_pkg else name.split('.')[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = '.'.join(anchor + ([base] if base else []))
            targets = [base] + [f'{base}.{alias.name}' for alias in node.names]
        for target in targets:
            # The deepest project module the import names (a package's __init__ counts).
            while target and target not in known:
                target = target.rpartition('.')[0]
            if target and target != name:
                found.add(target)
    return found


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _graph() -> Dict[str, Set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {}
    for name, path in modules.items():
        # A package importing its own submodules (a re-export in __init__) is not a circle.
        graph[name] = {m for m in _imports(name, path, known)
                       if not (path.name == '__init__.py' and m.startswith(name + '.'))}
    return graph


def test_no_module_imports_one_that_imports_it_back():
    """No import circle among emotion_ros and training modules, function-level imports included."""
    graph = _graph()
    assert len(graph) > 50 and 'emotion_ros.perception.pipeline' in graph
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_planted_circle():
    """The circle finder reports a planted a -> b -> c -> a circle (so the test above can fail)."""
    graph = _graph()
    graph['emotion_ros.errors'] = graph['emotion_ros.errors'] | {'emotion_ros.pipeline'}
    assert any('emotion_ros.errors' in comp and 'emotion_ros.pipeline' in comp
               for comp in _cycles(graph))


def test_package_root_is_small():
    """emotion_ros/ holds at most 8 modules beside its subpackages (one home per concern)."""
    root_modules = sorted(p.name for p in (ROOT / 'emotion_ros').glob('*.py'))
    assert len(root_modules) <= 8, root_modules


def test_core_layers_do_not_reach_up():
    """Perception, audio, fusion and the model contract never import evaluation or ROS glue."""
    graph = _graph()
    upper = ('emotion_ros.evaluation', 'emotion_ros.ros', 'emotion_ros.pipeline', 'training')
    lower = ('emotion_ros.perception', 'emotion_ros.audio', 'emotion_ros.fusion',
             'emotion_ros.llm', 'emotion_ros.config', 'emotion_ros.backends')
    bad = sorted((m, t) for m, targets in graph.items() if m.startswith(lower)
                 for t in targets if t.startswith(upper))
    assert bad == []
