"""From Hydra's DictConfig to typed, validated objects; composition for tests and tools."""

from __future__ import annotations

from collections.abc import Set
from functools import cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from orchestrator.config_keys import check_composed, did_you_mean, explain_hydra_error
from orchestrator.schema import Config, ConfigError, SettingConfig, register_configs, validate

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def available(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def to_typed(cfg: DictConfig) -> Config:
    """Typed, validated config with absolute paths (Ray Tune changes working directories). A key the schema does
    not have (`+sweep.lr=...`) is refused here: OmegaConf.to_object would keep it as a stray attribute."""
    check_composed(cfg)
    obj: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    obj.cache_dir = str(Path(obj.cache_dir).expanduser().resolve())
    if obj.sample.max_new_tokens is None:  # not given by the user or the setting: the model's measured default
        obj.sample.max_new_tokens = obj.model.max_new_tokens
    if obj.model.dtype == "auto":
        obj.model.dtype = auto_dtype(obj.cluster.gpus_per_node)
    validate(obj)
    return obj


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs that compute in bf16 natively


@cache  # read once per process: to_typed runs for every composed config
def cpu_flags() -> frozenset[str]:
    """This machine's CPU flags (Linux); empty where /proc/cpuinfo is not there."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(flag for line in text.splitlines() if line.startswith("flags")
                     for flag in line.split(":", 1)[1].split())


def auto_dtype(gpus_per_node: int, flags: Set[str] | None = None) -> str:
    """model.dtype=auto: bfloat16 on GPUs and on CPUs with native bf16; float32 on other CPUs, where torch emulates
    bf16 matmuls (measured on an AVX2 AMD EPYC: 69x slower than float32, docs/real_model.md). The sweep folder's
    config.yaml records the dtype this gave, so a resume elsewhere trains as the sweep began."""
    if gpus_per_node > 0:
        return "bfloat16"
    return "bfloat16" if set(CPU_BF16_FLAGS) & (cpu_flags() if flags is None else flags) else "float32"


def compose_dict(overrides: list[str]) -> DictConfig:
    """conf/ composed as the CLI would, untyped (what `--cfg job` prints); Hydra's refusal of an override becomes a
    ConfigError naming the fix."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            return compose(config_name="config", overrides=overrides)
        except (HydraException, OmegaConfBaseException) as err:
            raise explain_hydra_error(err, overrides) from None


def compose_config(overrides: list[str]) -> Config:
    """Compose conf/ as the CLI would, without Hydra's run-dir side effects (tests, tools)."""
    return to_typed(compose_dict(overrides))


def load_setting(name: str) -> SettingConfig:
    """A setting by name from conf/setting/ (its `setting:` block), checked against the schema."""
    path = CONF_DIR / "setting" / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown setting {name!r}{did_you_mean(name, available('setting'))}: "
                          f"available settings are {available('setting')}")
    raw = OmegaConf.load(path)
    if "setting" not in raw:
        raise ConfigError(f"{path} has no `setting:` block; a setting file starts with `# @package _global_` "
                          "and puts its fields under `setting:` (see conf/setting/animal_flag.yaml)")
    merged = OmegaConf.merge(OmegaConf.structured(SettingConfig), raw.setting)
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def settings_for_toy(cfg: Config) -> list[SettingConfig]:
    """The settings model=toy is pretrained on (model.toy.settings); the sweep's own setting must be one of
    them, or teach the same behavior (same prompts and toy answers) under another name."""
    from workers.models.toy import same_skill

    assert cfg.model.toy is not None
    names = list(cfg.model.toy.settings)
    settings = [cfg.setting if n == cfg.setting.name else load_setting(n) for n in names]
    if cfg.setting.toy is None:
        raise ConfigError(
            f"setting {cfg.setting.name!r} has no `toy:` block, so model=toy cannot run it: choose a real model "
            f"(model=<name> or model.path=<hub id or folder>), or settings the toy covers: {names}"
        )
    if not any(s.toy is not None and same_skill(s, cfg.setting) for s in settings):
        raise ConfigError(
            f"model=toy is pretrained for settings {names}, not {cfg.setting.name!r}: "
            f"add it with 'model.toy.settings=[{','.join(names + [cfg.setting.name])}]' (the toy is then rebuilt)"
        )
    return settings


def load_resumed(folder: Path, overrides: list[str]) -> DictConfig:
    """The config a sweep folder was started with; other overrides would mix two sweeps, so refuse."""
    extra = [o for o in overrides if not o.startswith(("resume=", "hydra."))]
    if extra:
        raise ConfigError(f"resume takes its config from {folder / 'config.yaml'}; drop the overrides {extra}")
    path = folder / "config.yaml"
    if not path.exists():
        raise ConfigError(f"resume={folder}: no config.yaml there, so it is not a sweep folder")
    cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path))
    cfg.resume = str(folder)
    return cfg
