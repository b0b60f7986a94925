"""Dataset construction: turn images (or a captioned gallery) into conversational
query-rewriting data the way ReCQR builds its benchmark (``convir datagen recqr``).

* :mod:`convir.datagen.entities` — entity sets with spaCy (an English pipeline when one is
  installed, else a documented rule-based fallback on ``spacy.blank("en")``);
* :mod:`convir.datagen.knowledge` — "are these two entities related?": ConceptNet 5 from its
  published assertions CSV (indexed into SQLite once) or text-embedding similarity offline;
* :mod:`convir.datagen.recqr` — the two-stage pipeline, LLM-as-judge and the splits;
* :mod:`convir.datagen.review` — the human-review CSV (two annotators + a tie-breaker);
* :mod:`convir.datagen.bench` — ``convir eval recqr``: ReCQR's Table 3 on an index.
"""
