"""A robot behind a gymnasium-style interface (``interface.RobotEnv``), the safety limits every
arm needs (``safety``), a person's keyboard or gamepad (``teleop``), and a template for your arm
that runs as shipped on the OGBench cube arm (``template``)."""
