"""A procedurally generated code world, small enough to self-align on 2 CPU cores.

Small typed functions over ints, strings and lists of ints (:mod:`.ops`, :mod:`.tasks`), split three ways
(:mod:`.world`: a pretraining corpus, a seed pool, a held-out benchmark), pretraining documents in the
pipeline's own formats (:mod:`.documents`) and the pretraining of a small StarCoder2 model on them
(:mod:`.pretrain`, driven by ``selfalign tiny-model --pretrain toyworld``). ``selfalign toyworld`` writes the files
the loop is pointed at; nothing in the loop knows about the world beyond those files.
"""

from lightning_selfalign.toyworld.documents import pretraining_documents
from lightning_selfalign.toyworld.world import World, build_world, split_of, write_world

__all__ = ["World", "build_world", "pretraining_documents", "split_of", "write_world"]
