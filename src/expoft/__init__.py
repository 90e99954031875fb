"""expoft: sample-efficient RL fine-tuning of expressive robot policies (EXPO, EXPO-FT)."""

__version__ = "0.1.0"
