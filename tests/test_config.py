"""One table of settings feeds the Python API, the command line, YAML files, validation and the
fine-tuning: each setting is checked here through all of them, under one name."""

from __future__ import annotations

from dataclasses import fields

import pytest

from headstart import FitConfig, HeadstartError
from headstart.cli import _parser
from headstart.config import COMMANDS, default_of, load_config, settings_table
from headstart.training.finetune import FineTuneSettings

TABLE = settings_table()
#: Settings that are valid only beside another: what they are tried with.
NEEDS = {
    "distill_temperature": {"teacher": "runs/x"},
    "unlabelled": {"teacher": "runs/x"},
    "loss": {"task": "regression"},
    "label_separator": {"task": "multi-label"},
}


def example(name: str):
    """A value of ``name`` other than its default that validates on its own."""
    described, default = TABLE[name], default_of(name)
    candidates = {
        "bool": [not default],
        "int": [2, 64],
        "float": [0.5, 0.1, 2.0],
        "names": [[c] for c in described.choices] if described.choices else [["resnet18"]],
        "freeze": [2, "all"],
        "str": list(described.choices or ()) or ["resnet18", "cpu", "somewhere"],
    }[described.kind]
    for value in candidates:
        if value == default or value is None:
            continue
        try:
            FitConfig.of(**{**NEEDS.get(name, {}), name: value})
        except HeadstartError:
            continue
        return value
    raise AssertionError(f"no example value for {name}")


def command_line(name: str, value) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag] if value else [f"--no-{flag[2:]}"]
    if isinstance(value, list):
        return [part for item in value for part in (flag, str(item))]
    return [flag, str(value)]


@pytest.mark.parametrize("name", list(TABLE))
def test_every_setting_is_documented_and_its_default_is_valid(name):
    described = TABLE[name]
    assert described.help and described.group in COMMANDS
    FitConfig.of(**{name: default_of(name)})


@pytest.mark.parametrize("name", list(TABLE))
def test_every_setting_is_a_flag_of_the_commands_that_take_it(name):
    value = example(name)
    for command in COMMANDS[TABLE[name].group]:
        if command == "distill" and name in ("arch", "teacher"):
            continue  # distill takes them as --student ARCH and its RUN
        args = _parser().parse_args([command, "DATA", *command_line(name, value)])
        assert vars(args)[name] == value, command


@pytest.mark.parametrize("name", list(TABLE))
def test_every_setting_is_a_yaml_key_in_either_spelling(name, tmp_path):
    value = example(name)
    for key in {name, name.replace("_", "-")}:
        file = tmp_path / f"{key}.yaml"
        file.write_text(f"{key}: {value if not isinstance(value, bool) else str(value).lower()}\n")
        assert load_config(file) == {name: value}


@pytest.mark.parametrize("name", list(TABLE))
def test_a_value_of_the_wrong_kind_is_refused_by_name(name, tmp_path):
    wrong = {"bool": "yes", "names": "flip", "freeze": -1}.get(TABLE[name].kind, [1, 2])
    with pytest.raises(HeadstartError, match=rf"^{name}="):
        FitConfig.of(**{name: wrong})
    file = tmp_path / "bad.yaml"
    file.write_text(f"{name}: {{a: 1}}\n")  # a map where a value belongs
    with pytest.raises(HeadstartError, match=rf"bad.yaml: {name}="):
        load_config(file)


def test_fine_tuning_settings_keep_their_names_down_to_the_training_loop():
    loop = {f.name for f in fields(FineTuneSettings)}
    # augment, policy, no_augment, vflip and cutout make one AugmentSettings; dropout and
    # drop_path are built into the network; early_stopping=False is patience=None; ensemble
    # is how many fine-tunings run.
    built_elsewhere = {"policy", "no_augment", "vflip", "cutout", "dropout", "drop_path"}
    # ensemble is how many fine-tunings run; teacher, distill_temperature and unlabelled make
    # the Teacher and its images.
    built_elsewhere |= {"ensemble", "teacher", "distill_temperature", "unlabelled"}
    # loss makes the training objective (headstart.training.objective).
    built_elsewhere |= {"loss"}
    for name, described in TABLE.items():
        if described.fine_tuning and name not in built_elsewhere | {"early_stopping"}:
            assert name in loop, name


def test_an_unknown_setting_is_named_with_the_closest_one():
    with pytest.raises(HeadstartError, match="unknown setting 'epoch'; did you mean 'epochs'"):
        FitConfig.of(epoch=3)


def test_a_yaml_syntax_error_is_one_line_with_its_place(tmp_path):
    file = tmp_path / "broken.yaml"
    file.write_text("lr: 0.1\nepochs: [3\n")
    with pytest.raises(HeadstartError) as caught:
        load_config(file)
    message = str(caught.value)
    assert "\n" not in message and "line" in message and "broken.yaml" in message
