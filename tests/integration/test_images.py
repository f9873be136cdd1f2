"""Images end to end with the official openai SDK: generations (default model, dall-e-3
quality pricing, gpt-image-1 token usage), edits (one image, several images, mask) and
variations, against a strict fake OpenAI that parses the multipart it receives."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest
import requests

from tests.fakes.media_stack import media_stack
from tests.fakes.media_upstream import GPT_IMAGE_TOKENS, IMAGE_INPUT_TOKENS, PNG
from tests.harness import openai_client
from tests.pricing_oracle import CATALOGUE, NANO, nano, per_munit, price

pytestmark = pytest.mark.integration

START = 5_000_000_000


def per_image(model: str, size: str, quality: str | None = None) -> Decimal:
    table = CATALOGUE["models"][model]["pricing"]["per_image"]
    value = table[size] if quality is None else table[size][quality]
    return Decimal(str(value)) * NANO


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = media_stack(tmp_path_factory.mktemp("images"))
    yield s
    s.stop()


@pytest.fixture
def account(stack):
    stack.reset()
    account_id, secret = stack.gateway.account(START)
    return account_id, secret, openai_client(stack.gateway, secret)


def test_generate_with_default_model(stack, account):
    account_id, _secret, client = account
    out = client.images.generate(prompt="a red fox", n=2, size="512x512")
    assert CATALOGUE["defaults"]["images.generations"] == "openai/dall-e-2"
    assert stack.openai.last.body == {"prompt": "a red fox", "n": 2, "size": "512x512",
                                      "model": "dall-e-2"}
    assert [d.url for d in out.data] == ["https://images.example/0.png",
                                         "https://images.example/1.png"]
    cost = nano(2 * per_image("openai/dall-e-2", "512x512"))
    assert stack.gateway.balance(account_id) == START - cost
    assert out.usage.model_extra["cost"] == cost / 1_000_000_000


def test_generate_dall_e_3_hd(stack, account):
    account_id, _secret, client = account
    out = client.images.generate(model="openai/dall-e-3", prompt="a lighthouse",
                                 size="1792x1024", quality="hd", response_format="b64_json")
    assert stack.openai.last.body["model"] == "dall-e-3"
    assert out.data[0].revised_prompt == "revised: a lighthouse"
    assert out.data[0].b64_json
    cost = nano(per_image("openai/dall-e-3", "1792x1024", "hd"))
    assert stack.gateway.balance(account_id) == START - cost


def test_generate_gpt_image_charged_from_usage(stack, account):
    account_id, _secret, client = account
    out = client.images.generate(model="openai/gpt-image-1", prompt="three small cats",
                                 quality="high", size="1024x1024")
    assert out.usage.output_tokens == GPT_IMAGE_TOKENS["high"]
    m = "openai/gpt-image-1"
    cost = per_munit(3 * price(m, "input_per_mtok")
                     + GPT_IMAGE_TOKENS["high"] * price(m, "image_output_per_mtok"))
    assert stack.gateway.balance(account_id) == START - cost
    assert out.usage.model_extra["cost"] == cost / 1_000_000_000


def test_edit_single_image_with_mask(stack, account):
    account_id, _secret, client = account
    out = client.images.edit(model="openai/dall-e-2", image=("in.png", PNG, "image/png"),
                             mask=("mask.png", PNG, "image/png"), prompt="add a hat",
                             size="256x256")
    sent = stack.openai.last
    assert sent.path == "/v1/images/edits"
    assert sent.headers["Authorization"] == "Bearer sk-up"
    assert sent.fields() == {"model": ["dall-e-2"], "prompt": ["add a hat"],
                             "size": ["256x256"]}
    files = {(f.name, f.filename, f.data) for f in sent.files()}
    assert files == {("image", "in.png", PNG), ("mask", "mask.png", PNG)}
    assert len(out.data) == 1
    cost = nano(per_image("openai/dall-e-2", "256x256"))
    assert stack.gateway.balance(account_id) == START - cost


def test_edit_several_images_gpt_image(stack, account):
    account_id, _secret, client = account
    big = PNG + bytes(range(256)) * 2048  # 512 KiB: spooled to disk on the way through
    out = client.images.edit(model="openai/gpt-image-1", prompt="combine them",
                             image=[("a.png", PNG, "image/png"), ("b.png", big, "image/png")],
                             quality="low")
    sent = stack.openai.last
    assert [(f.name, f.data) for f in sent.files()] == [("image[]", PNG), ("image[]", big)]
    assert out.usage.input_tokens == 2 + 2 * IMAGE_INPUT_TOKENS
    m = "openai/gpt-image-1"
    cost = per_munit(2 * price(m, "input_per_mtok")
                     + 2 * IMAGE_INPUT_TOKENS * price(m, "image_input_per_mtok")
                     + GPT_IMAGE_TOKENS["low"] * price(m, "image_output_per_mtok"))
    assert stack.gateway.balance(account_id) == START - cost


def test_variation(stack, account):
    account_id, _secret, client = account
    out = client.images.create_variation(image=("v.png", PNG, "image/png"),
                                         model="openai/dall-e-2", n=3, size="1024x1024")
    sent = stack.openai.last
    assert sent.path == "/v1/images/variations"
    assert sent.fields() == {"model": ["dall-e-2"], "n": ["3"], "size": ["1024x1024"]}
    assert len(out.data) == 3
    cost = nano(3 * per_image("openai/dall-e-2", "1024x1024"))
    assert stack.gateway.balance(account_id) == START - cost


def test_bad_uploads_are_4xx_without_charge(stack, account):
    account_id, secret, _client = account
    url = stack.gateway.base_url
    auth = {"Authorization": f"Bearer {secret}"}
    missing = requests.post(f"{url}/images/edits", headers=auth,
                            files={"model": (None, "openai/dall-e-2")})
    assert missing.status_code == 400
    assert "'image' (file), 'prompt'" in missing.json()["error"]["message"]
    not_form = requests.post(f"{url}/images/edits", headers=auth, json={"prompt": "x"})
    assert not_form.status_code == 415
    cut = requests.post(f"{url}/images/variations", data=b"--xyz\r\nContent-Disposition: "
                        b"form-data; name=\"image\"; filename=\"a.png\"\r\n\r\nabc",
                        headers={**auth, "Content-Type": "multipart/form-data; boundary=xyz"})
    assert cut.status_code == 400 and "closing boundary" in cut.json()["error"]["message"]
    bad_n = requests.post(f"{url}/images/variations", headers=auth,
                          files={"image": ("a.png", PNG), "n": (None, "many")})
    assert bad_n.status_code == 400 and bad_n.json()["error"]["param"] == "n"
    bad_size = requests.post(f"{url}/images/generations", headers=auth,
                             json={"prompt": "x", "size": "999x999"})
    assert bad_size.status_code == 400 and bad_size.json()["error"]["param"] == "size"
    wrong_kind = requests.post(f"{url}/images/variations", headers=auth,
                               files={"image": ("a.png", PNG),
                                      "model": (None, "openai/dall-e-3")})
    assert wrong_kind.status_code == 400
    assert "images.generations" in wrong_kind.json()["error"]["message"]
    assert stack.openai.requests == []
    assert stack.gateway.balance(account_id) == START


def test_upstream_refusal_passes_through_without_charge(stack, account):
    account_id, _secret, client = account
    with pytest.raises(openai.BadRequestError) as err:
        client.images.edit(model="openai/dall-e-2", image=("in.jpg", b"JFIF", "image/jpeg"),
                           prompt="x")
    assert err.value.body["param"] == "image"
    assert stack.gateway.balance(account_id) == START
