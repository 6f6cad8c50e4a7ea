def reference_markdown() -> str:
    return ""
