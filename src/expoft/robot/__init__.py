"""A robot behind a gymnasium-style interface (``interface.RobotEnv``), the safety limits every
arm needs (``safety``), and the OGBench cube arm behind the same interface (``sim``)."""
