"""Recipe schema (pydantic v2, extra="forbid") and the YAML loader with file:line error messages.

A recipe is validated data: every problem is reported at once, each as one line naming the file, the
line, the dotted key and the reason, so a user fixes a recipe in one pass instead of one crash per key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compressor.errors import RecipeError

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder", "npz")


class Section(BaseModel):
    # Non-finite numbers are never meaningful settings (an inf lr would only surface as NaN mid-run).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_number(cls, data: Any) -> Any:
        """YAML `yes`/`true` is a bool, which pydantic would quietly take as the number 1; passed on as text
        it fails as a number at its own key."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if isinstance(value, bool) and field is not None:
                kinds = set(get_args(field.annotation)) or {field.annotation}
                if bool not in kinds and kinds & {int, float}:
                    out[name] = str(value).lower()
        return out


class ModelConfig(Section):
    """Architecture; extra builder options (e.g. `hidden` for mlp, `depth`/`widen` for wrn) go in `options`."""

    name: str = Field(description="registered model name, see `compressor recipes --models`")
    hidden: list[Annotated[int, Field(gt=0)]] | None = Field(None, description="mlp hidden sizes")
    options: dict[str, Any] = Field(default_factory=dict, description="extra keyword options of the builder")


class DataConfig(Section):
    name: str = Field(description="digits | cifar10 | cifar100 | imagefolder | npz")
    root: str | None = Field(None, description="dataset folder, or the .npz file for npz")
    limit: int | None = Field(None, gt=0, description="use at most this many training examples")
    val_limit: int | None = Field(None, gt=0, description="use at most this many evaluation examples")
    val_split: float = Field(0.1, gt=0.0, lt=1.0, description="held-out fraction when there is no eval split")
    augment: bool | None = Field(None, description="None = the dataset's default augmentation")
    download: bool = Field(False, description="cifar: download with torchvision (needs network)")
    image_size: int | None = Field(None, gt=0, description="imagefolder: resize to this size (default 224)")
    cache: bool | None = Field(None, description="imagefolder: decode all images into memory once")
    workers: int | None = Field(None, ge=0, description="DataLoader workers; None = chosen for the device")
    pin_memory: bool | None = Field(None, description="page-locked batches for faster copies; None = on CUDA")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(f"unknown dataset '{v}' (known: {', '.join(DATASETS)})")
        return v


class SGDConfig(Section):
    """Dense baseline: SGD with momentum and a cosine or step schedule."""

    name: Literal["sgd"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[int] = Field(default_factory=list, description="step schedule: epochs")
    gamma: float = Field(0.1, gt=0, le=1)
    decay_bn: bool = Field(False, description="apply weight decay to BatchNorm and bias parameters")


Temperature = float | Literal["1/N", "1/sqrt(N)"]


class AVBConfig(Section):
    """Adaptive variational-Bayes optimizer = preconditioned SGHMC (SPEC section 1)."""

    name: Literal["avb"] = "avb"
    lr: float = Field(0.2, gt=0, description="C2_0, the step-size schedule's base; tau starts at 1/2, so 0.2 "
                      "steps like SGD at lr 0.1")
    beta1: float = Field(0.9, ge=0, lt=1, description="momentum retention (paper default 0.1)")
    beta2: float = Field(1.0, gt=0)
    nesterov: bool = Field(True, description="step from the look-ahead point, as Nesterov SGD (paper: off)")
    eta: float = Field(0.1, gt=0, description="mirror-descent rate of the preconditioner")
    weight_decay: float = Field(5e-4, ge=0, description="lambda1, slab precision per datum")
    temperature: Temperature = Field("1/N", description="1/N (cold), 1/sqrt(N) or a number")
    schedule: Literal["cyclical", "cosine", "constant"] = "cyclical"
    cycles: int = Field(1, ge=1)
    samples_per_cycle: int = Field(1, ge=0, description="posterior samples = last epochs of each cycle")
    prior_on_bn: bool = Field(False, description="also put prior and noise on BatchNorm/bias parameters")
    fused: Literal[True, False, "auto"] = Field(False, description="one-pass compiled optimizer step (true: everywhere, "
                                          "after a one-off compile of about a minute; auto: CUDA only, unverified)")

    @field_validator("temperature")
    @classmethod
    def _positive(cls, v: Temperature) -> Temperature:
        if isinstance(v, float) and v <= 0:
            raise ValueError("temperature must be positive, '1/N' or '1/sqrt(N)'")
        return v


class EMMCMCConfig(AVBConfig):
    """The AVB optimizer plus the spike-and-slab group prior with E-step and hard pruning (SPEC section 2)."""

    name: Literal["emmcmc"] = "emmcmc"  # type: ignore[assignment]
    lambda0: float = Field(0.05, gt=0, description="spike precision per datum (large decay)")
    pi: float = Field(0.5, gt=0, lt=1, description="prior slab probability")
    update_pi: bool = Field(False, description="pi <- mean of the slab probabilities after each E-step")
    estep: Literal["soft", "hard"] = "soft"
    warmup_epochs: int = Field(1, ge=0, description="E-steps start after this many epochs")
    estep_every: int | None = Field(None, gt=0, description="E-step every K steps (None: each epoch)")

    @model_validator(mode="after")
    def _spike_larger(self) -> EMMCMCConfig:
        if self.lambda0 <= self.weight_decay:
            raise ValueError("lambda0 (spike) must be larger than weight_decay (slab)")
        return self


class MagnitudeConfig(SGDConfig):
    """Global unstructured magnitude pruning at `prune.target_epoch`, then fine-tuning (Han et al. 2015)."""

    name: Literal["magnitude"] = "magnitude"  # type: ignore[assignment]


class GMPConfig(SGDConfig):
    """Gradual magnitude pruning: Zhu & Gupta's cubic sparsity ramp from prune.start_epoch to target_epoch."""

    name: Literal["gmp"] = "gmp"  # type: ignore[assignment]
    prune_every: int | None = Field(None, gt=0, description="steps between mask updates (None: 4 per epoch)")


class L1FilterConfig(SGDConfig):
    """L1-norm filter pruning of coupled channel groups at `prune.target_epoch`, then fine-tuning (Li et al.)."""

    name: Literal["l1_filter"] = "l1_filter"  # type: ignore[assignment]


class SlimmingConfig(SGDConfig):
    """Network slimming: L1 on BatchNorm scales until `prune.target_epoch`, prune by |gamma|, fine-tune."""

    name: Literal["slimming"] = "slimming"  # type: ignore[assignment]
    sparsity: float = Field(1e-4, ge=0, description="L1 strength on BatchNorm scales (Liu et al.: 1e-4)")


class SNIPConfig(SGDConfig):
    """SNIP: connection sensitivity |w * grad| on the first batch at initialisation, one shot, then training."""

    name: Literal["snip"] = "snip"  # type: ignore[assignment]
    structured: bool = Field(False, description="score and remove coupled channel groups instead of weights")


class RandomConfig(SGDConfig):
    """Random coupled channel groups removed at `prune.target_epoch`: the floor any criterion must beat."""

    name: Literal["random"] = "random"  # type: ignore[assignment]


class DepGraphConfig(SGDConfig):
    """DepGraph (Fang et al. 2023): group-norm sparse training until `prune.target_epoch`, then removal of
    the coupled groups with the smallest group norm, then fine-tuning."""

    name: Literal["depgraph"] = "depgraph"  # type: ignore[assignment]
    reg: float = Field(5e-4, ge=0, description="group regularisation strength (torch-pruning's --reg)")
    alpha: float = Field(16.0, ge=1, description="weakest groups get up to alpha x the regularisation")


MethodConfig = Annotated[
    SGDConfig | AVBConfig | EMMCMCConfig | MagnitudeConfig | GMPConfig | L1FilterConfig | SlimmingConfig
    | SNIPConfig | RandomConfig | DepGraphConfig,
    Field(discriminator="name"),
]


class TrainConfig(Section):
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(128, gt=0)
    seed: int = Field(0, ge=0, lt=2**63, description="torch seeds are 64-bit")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(False, description="bf16 autocast on CUDA")
    channels_last: bool = Field(False, description="channels_last memory format on CUDA")
    compile: bool = Field(False, description="torch.compile the training forward pass (slow first steps)")
    log_every: int = Field(20, gt=0, description="emit a step event every this many steps")


class PruneConfig(Section):
    granularity: Literal["channel", "kernel", "neuron", "feature"] = "channel"
    target: float | None = Field(None, gt=0, lt=1, description="fraction to remove (None: prior decides)")
    target_kind: Literal["macs", "params", "channels"] = "macs"
    start_epoch: int | None = Field(None, ge=0, description="spike ramp start (default: method warmup)")
    target_epoch: int | None = Field(None, ge=1, description="epoch by which the target is met")
    hard_threshold: float = Field(1e-4, ge=0, description="statistic below which a spiked group is removed")
    round_to: int = Field(8, ge=1, description="kept channels per layer stay multiples of this (or the full "
                          "width): fast conv kernels need multiples of 8; 1 = any width")


class EvalConfig(Section):
    batch_size: int = Field(512, gt=0)
    bins: int = Field(15, ge=2, description="ECE: equal-width top-label confidence bins")


class Recipe(Section):
    name: str | None = Field(None, description="run name (default: the recipe file's stem)")
    model: ModelConfig
    data: DataConfig
    method: MethodConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _prune_fits(self) -> Recipe:
        if self.prune.target_epoch is not None and self.prune.target_epoch > self.train.epochs:
            raise ValueError(f"prune.target_epoch ({self.prune.target_epoch}) exceeds train.epochs ({self.train.epochs})")
        start = self.prune.start_epoch
        if start is None and isinstance(self.method, EMMCMCConfig):
            start = self.method.warmup_epochs
        if self.prune.target_epoch is not None and start is not None and start > self.prune.target_epoch:
            raise ValueError(f"prune.start_epoch ({start}) is after prune.target_epoch ({self.prune.target_epoch})")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------- loading


def _line_index(node: yaml.Node, path: tuple[str, ...] = (), out: dict | None = None) -> dict:
    """Map dotted key paths to 1-based YAML line numbers, so errors can point at the line.

    Stops 16 levels down: recipes are shallow, and a YAML alias can make the node graph a cycle (`a: &x [*x]`).
    """
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if len(path) >= 16:
        return out
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (str(key.value),)
            out[sub] = key.start_mark.line + 1
            _line_index(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, path + (str(i),), out)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], YAML-typed value)."""
    if "=" not in text:
        raise RecipeError(f"--set {text}: expected KEY=VALUE (e.g. train.epochs=5)")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise RecipeError(f"--set {text}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> tuple[dict, dict[tuple[str, ...], str]]:
    data = copy.deepcopy(data)
    origin: dict[tuple[str, ...], str] = {}
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise RecipeError(f"--set {text}: '{'.'.join(parts[: i + 1])}' is not a section")
            node = nxt
        node[parts[-1]] = value
        origin[tuple(parts)] = f"--set {text}"
    return data, origin


def _format_errors(err: ValidationError, where: str, lines: dict, origin: dict) -> list[str]:
    problems = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        # pydantic puts the union tag in the path (method.emmcmc.beta1): drop it for the user's dotted key
        if len(loc) > 1 and loc[0] == "method" and loc[1] in (
                "sgd", "avb", "emmcmc", "magnitude", "gmp", "l1_filter", "slimming", "snip", "random", "depgraph"):
            loc = (loc[0],) + loc[2:]
        key = ".".join(loc) or "(top level)"
        src = next((origin[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in origin), None)
        src = src or next((v for k, v in origin.items() if k[: len(loc)] == loc), None)
        if src is None:
            line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), None)
            src = f"{where}:{line}" if line else where
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "union_tag_invalid":
            loc = loc + ("name",)
            key = ".".join(loc)
            src = origin.get(loc) or (f"{where}:{lines[loc]}" if loc in lines else src)
            ctx = e.get("ctx", {})
            msg = f"unknown method '{ctx.get('tag')}' (known: {ctx.get('expected_tags', '').replace(chr(39), '')})"
        elif e["type"] == "union_tag_not_found":
            key = ".".join(loc + ("name",))
            msg = "required key is missing"
        elif e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        problems.append(f"{src}: {key}: {msg}")
    return problems


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe; raise RecipeError with one line per problem."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{where}: recipe file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{where}: cannot read recipe ({exc.__class__.__name__}: {exc})") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{where}{line}: YAML syntax error: {reason}") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python converts (4300 digits)
        raise RecipeError(f"{where}: YAML value error: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise RecipeError(f"{where}: YAML nesting is too deep to be a recipe") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{where}:1: the recipe must be a mapping with sections model, data, method, train")
    lines = _line_index(node) if node is not None else {}
    data, origin = apply_overrides(data, overrides or [])
    return validate_recipe(data, where=where, lines=lines, origin=origin, default_name=path.stem)


def validate_recipe(
    data: dict,
    *,
    where: str = "<recipe>",
    lines: dict | None = None,
    origin: dict | None = None,
    default_name: str | None = None,
) -> Recipe:
    lines, origin = lines or {}, origin or {}
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(_format_errors(err, where, lines, origin)) from None
    problems = _check_names(recipe, where, lines, origin)
    if problems:
        raise RecipeError(problems)
    if recipe.name is None and default_name:
        recipe.name = default_name
    return recipe


def _check_names(recipe: Recipe, where: str, lines: dict, origin: dict) -> list[str]:
    """Checks that need the registries (model names and options, data paths) — still before any training."""
    from compressor.models import UnknownModelError, list_models, model_options

    def at(*key: str) -> str:
        if key in origin:
            return origin[key]
        line = next((lines[key[:i]] for i in range(len(key), -1, -1) if key[:i] in lines), None)
        return f"{where}:{line}" if line else where

    problems = []
    if recipe.model.name not in list_models():
        problems.append(f"{at('model', 'name')}: model.name: unknown model '{recipe.model.name}' "
                        f"(known: {', '.join(list_models())})")
    else:
        try:
            allowed = model_options(recipe.model.name)
        except UnknownModelError as exc:
            allowed, _ = set(), problems.append(f"{at('model', 'name')}: model.name: {exc}")
        if recipe.model.hidden is not None and "hidden" not in allowed:
            problems.append(f"{at('model', 'hidden')}: model.hidden: not an option of '{recipe.model.name}'")
        for key in recipe.model.options:
            if key not in allowed:
                problems.append(f"{at('model', 'options', key)}: model.options.{key}: not an option of "
                                f"'{recipe.model.name}' (options: {', '.join(sorted(allowed)) or 'none'})")
    d = recipe.data
    if d.name in ("cifar10", "cifar100", "imagefolder", "npz"):
        if d.root is None:
            problems.append(f"{at('data', 'name')}: data.root: required for dataset '{d.name}'")
        elif not Path(d.root).expanduser().exists() and not (d.download and d.name.startswith("cifar")):
            problems.append(f"{at('data', 'root')}: data.root: path does not exist: {d.root}")
        elif d.name == "npz" and not Path(d.root).expanduser().is_file():
            problems.append(f"{at('data', 'root')}: data.root: npz data needs a .npz file, got a folder: {d.root}")
    if recipe.prune.target is not None and recipe.method.name == "sgd":
        problems.append(f"{at('prune', 'target')}: prune.target: method 'sgd' does not prune (use emmcmc)")
    return problems


def resolved_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
