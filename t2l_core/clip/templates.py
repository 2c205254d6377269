"""Text templates used to augment prompts (supplement section 2.2; method notes 1.5)."""

COMPOSITION_TEMPLATES: tuple[str, ...] = (
    "photo of {}.",
    "high quality photo of {}.",
    "a photo of {}.",
    "the photo of {}.",
    "image of {}.",
    "an image of {}.",
    "high quality image of {}.",
    "a high quality image of {}.",
    "the {}.",
    "a {}.",
    "{}.",
    "{}",
    "{}!",
    "{}...",
)

SCREEN_TEMPLATES: tuple[str, ...] = (
    "{} over a green screen.",
    "{} in front of a green screen.",
)


def as_prompt_list(prompts: "str | list[str] | tuple[str, ...]", field: str = "prompt") -> list[str]:
    """Normalise one prompt or several into a non-empty list of stripped strings.

    A single string may hold several prompts separated by newlines or ``|``.
    Raises ValueError naming ``field`` when nothing is left.
    """
    if isinstance(prompts, str):
        parts = [p for chunk in prompts.splitlines() for p in chunk.split("|")]
    else:
        parts = list(prompts)
    cleaned = [p.strip() for p in parts if p and p.strip()]
    if not cleaned:
        raise ValueError(f"the {field} is empty: type what the edit should look like (e.g. 'oreo cake').")
    return cleaned


def expand(prompts: "list[str]", templates: "tuple[str, ...] | list[str]") -> list[str]:
    """Every prompt with every template, prompt-major: [p0t0, p0t1, ..., p1t0, ...]."""
    return [t.format(p) for p in prompts for t in templates]
