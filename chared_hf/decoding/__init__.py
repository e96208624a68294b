"""Rows of text over every member: the row protocol, the paper and exact modes, what calls
run ahead, the weights and the combination rules, and the engine that serves a batch's rows
together. Nothing here knows of Transformers' generation (``chared_hf.generation``,
``chared_hf.modeling``)."""
