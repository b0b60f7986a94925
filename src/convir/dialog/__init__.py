"""Dialogue state -> retrieval query (strategies); the conversation engine builds on these."""
