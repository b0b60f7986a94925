"""Conversation defaults every front end shares, in a module that imports nothing, so the CLI
can name them in its options without loading numpy (``convir --help`` stays fast)."""

# exchanges an LLM prompt shows besides the description (0 = all)
PROMPT_TURNS = 3
