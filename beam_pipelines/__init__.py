"""Apache Beam wiring of tfchips jobs: no logic of its own, only library calls."""
