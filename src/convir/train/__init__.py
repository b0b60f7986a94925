"""Training: fine-tune the retriever's text encoder and the conversational query rewriter.

* :mod:`convir.train.data`: training pairs and rewriting records from every source we read
  (coco5k-sim dev items, finished ``convir eval dialog`` runs, ChatIR dialogues with an index,
  ReCQR JSONL, a documented pairs JSONL), with errors that name the file and line;
* :mod:`convir.train.encoder`: ``convir train encoder`` (sentence-transformers InfoNCE with
  in-batch and mined hard negatives; for CLIP-style models the text tower against frozen
  image embeddings);
* :mod:`convir.train.rewriter`: ``convir train rewriter`` (LoRA on a causal LM, T then M stage);
* :mod:`convir.train.run`: what both share (work folder, resume, progress bar, seeds).

Heavy libraries (torch, transformers, peft, datasets) are imported inside functions.
"""
