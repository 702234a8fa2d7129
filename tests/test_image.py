"""``dspex.Image``: an image input sent as an OpenAI image content part."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

import dspex
from dspex.testing import DummyLM

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8
URL = "https://example.com/cat.jpg"


class Describe(dspex.Signature):
    image: dspex.Image = dspex.InputField()
    text: str = dspex.OutputField()


def image_parts(content: list[dict[str, object]]) -> list[object]:
    return [p["image_url"] for p in content if p["type"] == "image_url"]


@pytest.mark.parametrize("adapter", [dspex.ChatAdapter(), dspex.JSONAdapter()])
def test_an_image_input_becomes_a_content_part(adapter: dspex.Adapter) -> None:
    messages = adapter.format(Describe, [], {"image": dspex.Image(URL)})
    content = messages[-1]["content"]
    assert [p["type"] for p in content] == ["text", "image_url", "text"]
    assert content[1] == {"type": "image_url", "image_url": {"url": URL}}
    assert content[0]["text"] == "[[ ## image ## ]]\n"
    assert isinstance(messages[0]["content"], str)  # the system message stays text


def test_images_in_demos_and_nested_models() -> None:
    class Album(pydantic.BaseModel):
        images: list[dspex.Image]
        tag: str

    class Sig(dspex.Signature):
        album: Album = dspex.InputField()
        text: str = dspex.OutputField()

    urls = [f"https://example.com/{i}.jpg" for i in range(3)]
    demo = dspex.Example(album=Album(images=[dspex.Image(urls[0])], tag="d"), text="one")
    album = Album(images=[dspex.Image(u) for u in urls[1:]], tag="now")
    messages = dspex.ChatAdapter().format(Sig, [demo], {"album": album})
    assert image_parts(messages[1]["content"]) == [{"url": urls[0]}]
    assert isinstance(messages[2]["content"], str)  # the demo's answer is text
    assert image_parts(messages[3]["content"]) == [{"url": u} for u in urls[1:]]


def test_text_only_prompts_are_unchanged() -> None:
    messages = dspex.ChatAdapter().format(dspex.Signature("q -> a"), [], {"q": "hi"})
    assert all(isinstance(m["content"], str) for m in messages)


def test_image_sources(tmp_path: Path) -> None:
    assert dspex.Image(PNG).url.startswith("data:image/png;base64,")
    assert dspex.Image(url=URL).url == URL
    assert dspex.Image({"url": URL}).url == URL
    path = tmp_path / "pic.gif"
    path.write_bytes(b"GIF89a" + b"\x00" * 4)
    assert dspex.Image.from_path(path).url.startswith("data:image/gif;base64,")
    with pytest.raises(ValueError, match=r"Image\.from_path"):
        dspex.Image("/etc/passwd")  # a bare path is never read implicitly
    with pytest.raises(TypeError, match="only one"):
        dspex.Image(URL, url=URL)


def test_repr_hides_the_payload() -> None:
    image = dspex.Image("data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP")
    assert repr(image) == "Image(url=data:image/gif;base64,<IMAGE_BASE_64_ENCODED(22)>)"
    assert repr(dspex.Image(URL)) == f"Image(url='{URL}')"


def test_predict_sends_the_image_and_type_checks_it() -> None:
    lm = DummyLM([{"text": "a cat"}])
    pred = dspex.Predict(Describe)(image=dspex.Image(URL), lm=lm)
    assert pred.text == "a cat"
    assert image_parts(lm.history[-1]["messages"][-1]["content"]) == [{"url": URL}]
