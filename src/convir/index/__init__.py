"""Vector (faiss), BM25 (bm25s) and hybrid ranking over one gallery.

Hybrid defaults were tuned on the coco5k dev split (benchmarks/tune_hybrid.py): BM25 alone
is far weaker than dense there (R@10 56.0 vs 70.3), so equal-vote RRF drags dense down
(66.1); weighted min-max fusion with a 0.9 dense weight is the best variant (71.0).
"""

DEFAULT_FUSION = "weighted"
DEFAULT_ALPHA = 0.9
