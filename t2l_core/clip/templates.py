"""Text templates that augment prompts (Text2LIVE Appendix A.2; supplementary material Sec. 2.2)."""

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

    Args:
        prompts: a string (several prompts separated by newlines or ``|``) or a sequence of strings.
        field: the input's name as the user sees it (a ValueError names it when nothing is left).

    Returns:
        The prompts, stripped, empty ones dropped.
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
    """Every prompt with every template.

    Args:
        prompts: P prompts.
        templates: T templates with one ``{}`` each.

    Returns:
        P*T texts, prompt-major: [p0t0, p0t1, ..., p1t0, ...].
    """
    return [t.format(p) for p in prompts for t in templates]
