"""The bouncing-balls demo domain: procedural data, quality metrics and the training recipe of
the shipped default model. A user of the engine, not part of its core:

- ``vdengine.balls.data``: procedural clips (1-3 coloured discs bouncing on black);
- ``vdengine.balls.metrics``: permanence, count, smoothness and colour measures of generated clips;
- ``vdengine.balls.train``: the resumable training recipe (``vdengine train``).
"""
