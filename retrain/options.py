"""Every option, declared once, as scikit-learn's `_parameter_constraints`: its default, the
values it accepts, its flags and help, and whether the run records it.

One table (`OPTIONS`) serves four readers, so that a change is one line here:
- the Python API: `HeadOptions` and `RunOptions` take their defaults from `default(name)`
  and check themselves with `check(obj)`; `retrain.train(...)` goes through them;
- the command line: `add_options(parser, names)` declares the argparse options of every
  subcommand that takes them (fit, lr-find, evaluate, classify, serve...), with the same
  constraint as the argparse type, so a bad value reads the same in both places:
  `--seed must be a whole number from 0 to 4,294,967,295; got -1` on the command line,
  `seed must be a whole number from 0 to 4,294,967,295. Received: seed=-1.` from Python;
- the record: `record(obj)` is what metrics.json and the model file keep of the options.

>>> default("epochs"), default("val_percent")
('auto', 10)
>>> OPTIONS["seed"].constraint.words()
'a whole number from 0 to 4,294,967,295'
"""
import argparse
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Iterable, Optional

from .augment import MAX_TTA_VIEWS
from .constraints import AnyOf, Constraint, Flag, Integer, Literal, Number, OneOf, Text
from .backbones.registry import BACKBONES, DEFAULT_BACKBONE
from .errors import ConfigError

__all__ = ["AUTO", "MAX_HIDDEN_UNITS", "MAX_SEED", "OPTIONS", "Option", "OptionError",
           "add_options", "check", "default", "record", "values_from"]

AUTO = "auto"      # an option whose value depends on whether blocks are fine-tuned
# The widest hidden layer: 16,384 units on 1,280 features are 84 MB of weights, and Adam
# keeps three more copies; wider only turns a typo into an out-of-memory crash.
MAX_HIDDEN_UNITS = 16384
MAX_SEED = 2**32 - 1         # numpy's seeds are unsigned 32-bit words
RUNTIMES = ("numpy", "openvino", "onnxruntime")      # what runtimes.py can run a model on
PRECISIONS = ("f32", "bf16")


class OptionError(ConfigError):
    """Options whose values are not ones they accept. `str()` names them as Python does
    (`seed must be ... Received: seed=-1.`), `command_line()` as the CLI does (`--seed must
    be ...; got -1.`), so that cli.main can say it in the user's words.

    `problem` completes "<names> ...", `values` are the options' values by name, `example`
    good ones for the hint (default: the table's examples)."""

    def __init__(self, problem: str, values: dict, example: Optional[dict] = None):
        self.problem, self.values = problem, dict(values)
        self.example = example or {name: OPTIONS[name].example for name in values
                                   if OPTIONS[name].example is not None}
        said = ", ".join(f"{name}={value!r}" for name, value in self.values.items())
        super().__init__(f"{' + '.join(self.values)} {problem}. Received: {said}.",
                         hint="For example " + ", ".join(
                             f"{name}={value!r}" for name, value in self.example.items())
                         + "." if self.example else None)

    def command_line(self) -> tuple:
        """(message, hint) with the options' flags, as a user typed them."""
        flag = {name: OPTIONS[name].flags[0] for name in self.values}
        got = (str(next(iter(self.values.values()))) if len(self.values) == 1 else
               " ".join(f"{flag[name]} {value}" for name, value in self.values.items()))
        example = " ".join(f"{flag[name]} {value}" for name, value in self.example.items())
        return (f"{' + '.join(flag.values())} {self.problem}; got {got}.",
                f"For example {example}." if example else None)


# -- the table ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """One option. `flags` (the first is the one errors name; none: Python only),
    `record`: kept in metrics.json and the model file, `example`: a good value for hints."""
    name: str
    default: Any
    constraint: Constraint
    help: str = ""
    flags: tuple = None
    metavar: Optional[str] = None
    record: bool = True
    example: Any = None

    def __post_init__(self):
        if self.flags is None:
            object.__setattr__(self, "flags", ("--" + self.name.replace("_", "-"),))
        if self.example is None and self.default is not None and self.default is not False:
            object.__setattr__(self, "example", self.default)

    def check(self, value: Any) -> Any:
        """`value`, or OptionError naming the option, what it must be, and the value."""
        if not self.constraint.accepts(value):
            raise OptionError(f"must be {self.constraint.words()}", {self.name: value})
        return value

    def argparse_type(self) -> Callable[[str], Any]:
        """What argparse calls on the text: the value, or its one-line complaint."""
        def parse(text):
            try:
                value = self.constraint.parse(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"must be {self.constraint.words(cli=True)}; got "
                    + (f"{text!r}" if text else "an empty one")) from None
            if not self.constraint.accepts(value):
                raise argparse.ArgumentTypeError(
                    f"must be {self.constraint.words(cli=True)}; got {text}")
            return value
        parse.__name__ = self.name
        return parse


_PERCENT = Number(0, 100, open_high=True)
_VIEWS = Integer(0, MAX_TTA_VIEWS)
_VIEWS_WORDS = (f"average the class probabilities over the plain view and N fixed views (up "
                f"to {MAX_TTA_VIEWS}: the mirror image unless trained with --no-flip, then "
                "crops)")

OPTIONS = {o.name: o for o in (
    # How the head (and --fine-tune's blocks) train: fit.HeadOptions.
    Option("epochs", AUTO, AnyOf((Literal(AUTO), Integer(1))),
           "most passes over the training images (auto: 50 for the head alone; 15 when "
           "fine-tuning, after --freeze-epochs)"),
    Option("batch_size", 32, Integer(1), "images per training step"),
    Option("learning_rate", 0.002, AnyOf((Literal(AUTO), Number(0, open_low=True))),
           "the head's peak learning rate (AdamW, cosine schedule); auto: the rate `retrain "
           "lr-find` suggests, its curve in RUN/lr_find.html", flags=("--lr", "--learning-rate")),
    Option("patience", AUTO,
           AnyOf((Literal(AUTO), Integer(0), Literal(None, "no early stopping"))),
           "epochs without a better val loss before stopping, the best epoch's weights kept "
           "(auto: 5 for the head alone; when fine-tuning, none)"),
    Option("hidden_units", 0, Integer(0, MAX_HIDDEN_UNITS),
           "units of a hidden ReLU layer before the softmax (0: none)"),
    Option("dropout", 0.2, Number(0, 1, open_high=True),
           "dropout after the hidden layer (used with --hidden-units)"),
    Option("seed", 0, Integer(0, MAX_SEED), "seed for initialisation and shuffling"),
    Option("fine_tune", 0, Integer(0), "train the top N blocks of the backbone with the head "
           "(0: the head alone; for EfficientNet-Lite the last 1x1 conv is the first block)",
           metavar="N"),
    Option("augment", 0, Integer(0), "K augmented views of each training image (random "
           "resized crop, flip, brightness/contrast), cached like the plain one", metavar="K"),
    Option("flip", True, Flag(), "no mirrored views (for data where a mirror image changes "
           "the class: text, digits)", flags=("--no-flip",)),
    Option("backbone_learning_rate", 0.0005, Number(0, open_low=True),
           "peak learning rate of the fine-tuned blocks (the head trains with them at half "
           "--lr after --freeze-epochs, else at --lr)", flags=("--backbone-lr",)),
    Option("weight_decay", 0.01, Number(0), "AdamW weight decay"),
    Option("warmup_epochs", 1, Integer(0),
           "epochs of linear learning-rate warmup before the cosine decay"),
    Option("label_smoothing", 0.0, Number(0, 1, open_high=True),
           "label smoothing of the crossentropy (make_image_classifier uses 0.1; 0 measured "
           "better here: README)", example=0.1),
    Option("freeze_epochs", 3, Integer(0), "with --fine-tune: epochs of the head alone before "
           "the blocks train with it (as fastai's fine_tune and the Keras guide)"),
    # What the run does around the head: pipeline.RunOptions.
    Option("backbone", DEFAULT_BACKBONE, OneOf(tuple(sorted(BACKBONES))),
           "pretrained ImageNet feature extractor (`retrain backbones` compares them; "
           "`retrain pretrained --backbone NAME` converts its weights)"),
    Option("val_percent", 10, _PERCENT, "share of each class for validation (early stopping)"),
    Option("test_percent", 10, _PERCENT, "share of each class held out for the final test"),
    Option("cache_dir", None, Text(), "feature cache shared by all runs and datasets "
           "(default: $XDG_CACHE_HOME/retrain if set, else ~/.cache/retrain); safe to delete",
           flags=("--cache",), metavar="DIR", record=False),
    Option("extract_batch_size", None,
           AnyOf((Integer(1), Literal(None, "the runtime's own (runtimes.Runtime.batch_size)"))),
           flags=(), record=False),
    Option("workers", 2, Integer(1), "threads decoding and resizing images", record=False),
    Option("progress", True, Flag(), "no progress bars or stage lines", flags=("-q", "--quiet"),
           record=False),
    Option("runtime", "auto", OneOf(("auto",) + RUNTIMES),
           "what runs the frozen model's forward passes: auto (the fastest installed, see "
           "`retrain runtimes`), numpy (the engine itself), openvino or onnxruntime (the "
           "extras of the same names, which `make install` installs)", record=False),
    Option("precision", "f32", OneOf(PRECISIONS),
           "f32, or bf16 where the runtime and the CPU support it (OpenVINO on CPUs with "
           "AVX512_BF16 or AMX): faster, features differ slightly and are cached apart",
           record=False),
    Option("crop_fraction", None, AnyOf((Number(0, 1, open_low=True),
                                         Literal(None, "the backbone's own"))),
           "centre crop F of each image's short side before the resize (default: the "
           "backbone's own, 224/256 for EfficientNet-Lite0); 1.0 keeps the whole image, "
           "which suits objects that fill the frame (Fashion-MNIST: docs/recipes.md); the "
           "model file records it", metavar="F", example=1.0),
    Option("jpeg_draft", True, Flag(), "decode JPEGs at full size before the resize, not by "
           "DCT scaling to about the input size (slower on photos; the model file records it)",
           flags=("--no-jpeg-draft",)),
    Option("cv", 0, AnyOf((Literal(0, "none"), Integer(2, 100))),
           "also cross-validate the head alone on the cached features, K folds of every "
           "usable image: prints each fold's accuracy, their mean and spread (for comparing "
           "recipes on small data; not with --fine-tune or --augment, whose cost would be K "
           "full runs)", metavar="K", example=5),
    Option("tta", 0, _VIEWS, f"{_VIEWS_WORDS}; the model records N, and classify, evaluate "
           "and serve then do the same", metavar="N", example=2),
    Option("search", False, Flag(), "try a small grid of recipes (search.py): the head alone "
           "at 3 rates, with and without 256 hidden units, then fine-tuning the top 1, 2 and "
           "3 blocks on 4 augmented views, all on inputs cached once; scored by val loss, or "
           "by 5-fold cross-validation under 1,000 train+val images; the first recipe within "
           "one standard error of the best is chosen, retrained on train+val and scored once "
           "on test"),
    Option("search_budget", 600.0, Number(0, open_low=True),
           "seconds the search may spend trying recipes: one whose estimated cost does not "
           "fit in what is left is skipped (and listed); the first always runs; the final "
           "training comes after", metavar="S"),
    # What a command that uses a model is told (evaluate, classify, serve, api.predict).
    Option("min_confidence", None,
           AnyOf((Number(0, 1, open_high=True), Literal(None, "always answer"))),
           "answer \"unknown\" where the most probable class has a probability below P "
           "(`retrain evaluate` prints what each P leaves: coverage and accuracy)",
           metavar="P", example=0.5),
    Option("top_k", 3, Integer(1), "how many classes to show per image", record=False),
    Option("assert_accuracy_at_least", None, AnyOf((Number(0, 1), Literal(None, "no gate"))),
           "exit with status 3 if the test accuracy is below X (a CI gate)", metavar="X",
           example=0.9),
    # `retrain serve`.
    Option("host", "127.0.0.1", Text("an address", none_too=False),
           "address to listen on (anything but loopback is reachable from other machines: "
           "use --api-key)", record=False),
    Option("port", 8000, Integer(0, 65535), "TCP port (0: any free one)", record=False),
    Option("max_batch", 32, Integer(1), "images per forward pass", record=False),
    Option("max_wait_ms", 5.0, Number(0, 10_000),
           "how long a batch waits for more images after its first", record=False),
    Option("max_queue", 256, Integer(1),
           "images admitted at once; beyond, 503 with Retry-After", record=False),
    Option("max_upload_mb", 20.0, Number(0, 4096, open_low=True),
           "largest request body (413 beyond)", record=False),
    Option("max_files", 32, Integer(1), "most images in one request (413 beyond)",
           record=False),
    Option("read_timeout_s", 60.0, Number(0, 86_400, open_low=True),
           "longest a request's body may take to arrive (408 beyond)", record=False),
)}

# Variants: the same value, said for another command.
VARIANTS = {
    "predict_batch_size": replace(OPTIONS["batch_size"], help="images per forward pass"),
    "tta_override": replace(OPTIONS["tta"], default=None,
                            constraint=AnyOf((_VIEWS, Literal(None, "the model's record"))),
                            help=f"{_VIEWS_WORDS} (default: the N the model records; 0: the "
                                 "plain view)"),
    "quiet_log": replace(OPTIONS["progress"], help="no access-log lines"),
    "quiet_bars": replace(OPTIONS["progress"], help="no progress bars"),
    "convert_backbone": replace(OPTIONS["backbone"], default=argparse.SUPPRESS,
                                help="convert this backbone only (default: all of them)"),
    "upload_workers": replace(OPTIONS["workers"], help="threads decoding and resizing uploads"),
}


def default(name: str) -> Any:
    """The default of option `name`, for dataclass fields: `epochs: object = default("epochs")`."""
    return OPTIONS[name].default


def check(obj: Any) -> Any:
    """`obj` (a dataclass of options) when each of its fields that the table declares holds
    a value the option accepts; else OptionError naming the first one that does not."""
    for item in fields(obj):
        if item.name in OPTIONS:
            OPTIONS[item.name].check(getattr(obj, item.name))
    return obj


def record(obj: Any) -> dict:
    """What the run keeps of a dataclass of options (metrics.json, the model file): each
    declared field marked `record`, by name, in the dataclass's order."""
    return {item.name: getattr(obj, item.name) for item in fields(obj)
            if item.name in OPTIONS and OPTIONS[item.name].record}


def values_from(args: argparse.Namespace, cls: type) -> dict:
    """The keyword arguments of dataclass `cls` that the parsed `args` hold."""
    return {item.name: getattr(args, item.name) for item in fields(cls)
            if hasattr(args, item.name)}


def add_options(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """Declare the options `names` (OPTIONS' or VARIANTS' keys) on an argparse parser: its
    flags, the table's constraint as its type (or choices), default, help and metavar. A
    boolean option is a switch that sets the opposite of its default."""
    for key in names:
        option = VARIANTS.get(key) or OPTIONS[key]
        spec = {"dest": option.name, "default": option.default, "help": option.help}
        if isinstance(option.constraint, Flag):
            spec["action"] = "store_false" if option.default else "store_true"
        elif isinstance(option.constraint, OneOf):
            spec["choices"] = option.constraint.names
        else:
            spec.update(type=option.argparse_type(), metavar=option.metavar
                        or option.flags[0].lstrip("-").replace("-", "_").upper())
        parser.add_argument(*option.flags, **spec)
