"""Binding a modality to a frozen image embedding space, and using what it gives.

    train.py        train_binding: one ImageBind tower against a store's precomputed image vectors
    config.py       TrainConfig (every knob of a run) and TrainResult
    objective.py    the loss, the learning-rate schedule, the seeded data order, determinism
    pairs.py        (model-ready input, target vector) pairs read from the shards and a store
    checkpoints.py  a run directory on disk: weights, optimizer state, losses, state.json
    models.py       loading encoders for binding commands: a trained run, or any factory name
    evaluate.py     zero-shot classification and cross-modal Recall@k from stores; embed_modality
    search.py       nearest samples of a store for query files (embedding arithmetic)
    demo.py         `bindset demo --bind`: the emergent zero-shot effect on generated data
    demo_clip.py    the demo's tiny CLIP (captioned frames, CLIP training)

The trained model itself is an encoder family (`encoders/binding.py`, `binding:<size>`), so
`bindset embed --encoder binding:tiny --checkpoint <run>/checkpoints/epoch-NNNN.safetensors` embeds
with it like with any other encoder. Nothing is imported here: `bindset` builds its parsers
without torch, and each module imports what it needs.
"""
