"""The public API reads as documentation: every public signature is annotated and has a
docstring in the one house style (STYLE.md habit 10: a summary sentence, then why and the
shapes, `Args:` only where not obvious, and `>>>` examples that run), and those examples
run here, so that `make test` runs them."""
import doctest
import inspect

import pytest

import retrain
import retrain.api
import retrain.constraints
import retrain.engine
import retrain.options
from retrain.engine import Trainer

E = retrain.engine
CLASSES = (retrain.api.ImageClassifier, retrain.api.Prediction, Trainer, E.Layer, E.Model,
           E.Sequential, E.GradientTape, E.Tensor, E.Variable, E.Callback, E.History,
           E.EarlyStopping, E.Optimizer, E.SGD, E.Adam, E.AdamW, E.MultiOptimizer, E.CosineDecay)
MODULES = (retrain, retrain.engine, retrain.api, retrain.options)


def _public_callables():
    found = {}
    for module in MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    for cls in CLASSES:
        for name, obj in vars(cls).items():
            if inspect.isfunction(obj) and (not name.startswith("_") or name == "__init__"):
                found[f"{cls.__module__}.{obj.__qualname__}"] = obj
    return found


PUBLIC = _public_callables()


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_signatures_are_annotated(name):
    signature = inspect.signature(PUBLIC[name])
    missing = [p.name for p in signature.parameters.values()
               if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    assert missing == [], f"{name} has no annotation for {missing}"


def test_the_annotation_check_sees_a_bare_function():
    def bare(x, y: int) -> int:
        return y

    signature = inspect.signature(bare)
    assert [p.name for p in signature.parameters.values()
            if p.annotation is inspect.Parameter.empty] == ["x"]


@pytest.mark.parametrize("name", sorted(n for n in PUBLIC if not n.endswith(".__init__")))
def test_public_callables_have_a_docstring(name):
    assert (PUBLIC[name].__doc__ or "").strip(), f"{name} has no docstring"


@pytest.mark.parametrize("module", [retrain, retrain.api, retrain.options, retrain.constraints],
                         ids=lambda m: m.__name__)
def test_the_docstring_examples_run(module):
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = [t for t in finder.find(module, module.__name__) if t.examples]
    assert tests, f"{module.__name__} has no docstring example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
