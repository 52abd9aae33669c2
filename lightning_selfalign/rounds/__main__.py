"""``python -m lightning_selfalign.rounds --workdir W --round R --model_dir M [--shard i/n --step S]``: the
between-rounds worker (:func:`lightning_selfalign.rounds.worker.main`) that the SelfAlignRounds callback starts."""

from lightning_selfalign.rounds.worker import main

main()
