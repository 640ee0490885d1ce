"""The package's layering, read from the source: no module imports a higher layer, and no cycle.

Every `import`/`from ... import` of `uma2_tf` is read with `ast`, function-local ones included (a
local import is still a dependency), and each module is placed in its layer, lowest first.
"""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "uma2_tf")

# Lowest first. A module may import its own layer and those below it.
LAYERS = [
    ("utilities", ["uma2_tf", "uma2_tf.atomic_files", "uma2_tf.config_flags", "uma2_tf.distribute",
                   "uma2_tf.launcher", "uma2_tf.run_dir"]),
    ("record contract and training input", ["uma2_tf.data"]),
    ("dataset sources", ["uma2_tf.sources"]),
    ("losses", ["uma2_tf.tasks"]),
    ("models", ["uma2_tf.models"]),
    ("metrics and evaluation", ["uma2_tf.metrics", "uma2_tf.bias_metrics", "uma2_tf.evaluation",
                                "uma2_tf.profiling", "uma2_tf.routing_metrics",
                                "uma2_tf.sequential_evaluation"]),
    ("serving", ["uma2_tf.serving"]),
    ("training", ["uma2_tf.training", "uma2_tf.train_config", "uma2_tf.fit_callbacks",
                  "uma2_tf.optimizers", "uma2_tf.run_evaluators"]),
    ("export", ["uma2_tf.export", "uma2_tf.index_check", "uma2_tf.raw_ids"]),
    ("experiments", ["uma2_tf.experiment"]),
]


def module_name(path: str) -> str:
  rel = os.path.relpath(path, os.path.dirname(ROOT))[:-len(".py")].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def all_modules() -> dict[str, str]:
  found = {}
  for directory, _, files in os.walk(ROOT):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        found[module_name(path)] = path
  return found


MODULES = all_modules()


def imports(path: str) -> set[str]:
  """The uma2_tf modules `path` imports (a `from pkg import name` counts `pkg.name` if a module)."""
  tree = ast.parse(open(path).read(), path)
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.startswith("uma2_tf")}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("uma2_tf"):
      for a in node.names:
        candidate = f"{node.module}.{a.name}"
        found.add(candidate if candidate in MODULES else node.module)
  return found


def layer_of(module: str) -> int:
  best = None
  for rank, (_, prefixes) in enumerate(LAYERS):
    for prefix in prefixes:
      if module == prefix or module.startswith(prefix + "."):
        if best is None or len(prefix) > best[1]:
          best = (rank, len(prefix))
  assert best is not None, f"{module} is in no layer: add it to LAYERS"
  return best[0]


def test_every_module_has_a_layer():
  for module in MODULES:
    layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_higher_layer(module):
  rank = layer_of(module)
  upward = sorted(m for m in imports(MODULES[module]) if m != "uma2_tf" and layer_of(m) > rank)
  assert not upward, (f"{module} ({LAYERS[rank][0]}) imports {upward} from a higher layer "
                      f"({', '.join(LAYERS[layer_of(m)][0] for m in upward)})")


def test_no_import_cycle():
  # Function-local imports count: a cycle put off until call time is still a cycle.
  graph = {m: {i for i in imports(p) if i in MODULES and i not in (m, "uma2_tf")}
           for m, p in MODULES.items()}
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 1:
        pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
      elif nxt not in state:
        visit(nxt)
    stack.pop()
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node)


def test_no_module_over_400_lines_but_the_allowed():
  # Each of these is one thing, too long to cut without cutting it in the middle.
  one_thing = {"uma2_tf.sources.simulator", "uma2_tf.sources.recflow_files", "uma2_tf.sources.logs",
               "uma2_tf.sources.request_logs_files",
               "uma2_tf.sources.logs_beam", "uma2_tf.sources.kuairand", "uma2_tf.sources.movielens"}
  long = {m: sum(1 for _ in open(p)) for m, p in MODULES.items()}
  too_long = {m: n for m, n in long.items() if n > 400 and m not in one_thing}
  assert not too_long, too_long
