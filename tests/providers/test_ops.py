"""The mapping vocabulary descriptors compile to: what a provider receives for a request."""

import pytest

from runtime import ops


def test_rename_moves_value_and_nests_dotted_targets():
    body = {"seed": 7, "max_tokens": 10}
    ops.rename(body, "seed", "random_seed")
    ops.rename(body, "max_tokens", "generationConfig.maxOutputTokens")
    assert body == {"random_seed": 7, "generationConfig": {"maxOutputTokens": 10}}


def test_rename_of_absent_or_null_field_sends_nothing():
    body = {"seed": None}
    ops.rename(body, "seed", "random_seed")
    ops.rename(body, "stop", "stop_sequences")
    assert body == {}


def test_nest_keeps_name():
    body = {"temperature": 0.2}
    ops.nest(body, "temperature", "generationConfig")
    assert body == {"generationConfig": {"temperature": 0.2}}


def test_reject_names_the_concrete_field():
    body = {"messages": [{"role": "user"}, {"role": "user", "name": "bob"}]}
    with pytest.raises(ops.MappingError) as err:
        ops.reject(body, "messages[].name", "groq")
    assert err.value.param == "messages[1].name"
    assert "groq" in err.value.message


def test_reject_ignores_absent_field():
    body = {"model": "m"}
    ops.reject(body, "logprobs", "groq")
    assert body == {"model": "m"}


def test_drop_in_every_list_element():
    body = {"messages": [{"role": "user", "name": "a"}, {"role": "assistant"}]}
    ops.drop(body, "messages[].name")
    assert body == {"messages": [{"role": "user"}, {"role": "assistant"}]}


@pytest.mark.parametrize("value,ok", [(1, True), (2, False), (0, False), (1.0, True)])
def test_range_refuses_outside_never_clamps(value, ok):
    body = {"n": value}
    if ok:
        ops.check_range(body, "n", 1, 1, "groq")
        assert body == {"n": value}
    else:
        with pytest.raises(ops.MappingError, match=r"'n' must be within \[1, 1\]"):
            ops.check_range(body, "n", 1, 1, "groq")


def test_enum_refuses_values_the_provider_lacks():
    body = {"response_format": "json"}
    ops.check_enum(body, "response_format", ["json", "text"], "groq")
    assert body == {"response_format": "json"}
    ops.check_enum({}, "response_format", ["json"], "groq")  # absent: nothing to check
    with pytest.raises(ops.MappingError) as err:
        ops.check_enum({"response_format": "srt"}, "response_format", ["json", "text"], "groq")
    assert err.value.param == "response_format"
    assert err.value.message == ("'response_format' must be one of 'json', 'text' for "
                                 "provider 'groq', got 'srt'.")
    with pytest.raises(ops.MappingError):
        ops.check_enum({"flag": 1}, "flag", [True], "x")  # 1 is not true in JSON


def test_enum_map_translates_known_values_only():
    body = {"tool_choice": "required"}
    ops.enum_map(body, "tool_choice", {"required": "any"})
    assert body["tool_choice"] == "any"
    body = {"tool_choice": {"type": "function"}}
    ops.enum_map(body, "tool_choice", {"required": "any"})
    assert body["tool_choice"] == {"type": "function"}


def test_default_and_set():
    body = {"a": None}
    ops.default(body, "a", 1)
    ops.default(body, "b.c", 2)
    ops.set_value(body, "d", 3)
    ops.default(body, "d", 4)
    assert body == {"a": 1, "b": {"c": 2}, "d": 3}


def test_enum_map_treats_equal_json_numbers_alike_but_not_booleans():
    body = {"presence_penalty": 0.0, "logprobs": False, "n": 1.0, "flag": 0}
    ops.enum_map(body, "presence_penalty", {0: None})
    ops.enum_map(body, "logprobs", {False: None})
    ops.enum_map(body, "n", {1: None})
    ops.enum_map(body, "flag", {False: "bool"})
    assert body == {"presence_penalty": None, "logprobs": None, "n": None, "flag": 0}


@pytest.mark.parametrize("kind", ["audio.transcriptions", "audio.translations"])
def test_groq_transcribes_to_neither_srt_nor_vtt(kind):
    from generated.registry import DESCRIPTORS

    translate = DESCRIPTORS["groq"].translate[kind]
    assert translate({"model": "whisper-large-v3", "response_format": "verbose_json"}) == {
        "model": "whisper-large-v3", "response_format": "verbose_json"}
    for fmt in ("srt", "vtt"):
        with pytest.raises(ops.MappingError) as err:
            translate({"model": "whisper-large-v3", "response_format": fmt})
        assert err.value.param == "response_format"
