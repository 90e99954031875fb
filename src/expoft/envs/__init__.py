import os

# MuJoCo picks its OpenGL backend when it is first imported. Its default (GLFW) needs a display;
# EGL renders offscreen on a headless machine. A user's own MUJOCO_GL setting wins.
os.environ.setdefault("MUJOCO_GL", "egl")
