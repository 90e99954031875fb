import ctypes.util
import os

# MuJoCo picks its OpenGL backend when it is first imported. Its default (GLFW) needs a display;
# EGL renders offscreen on a headless machine. A user's own MUJOCO_GL setting wins. Without libEGL
# the EGL choice would break even state-only environments (dm_control opens a display on import),
# so it is only the default where the library exists.
if ctypes.util.find_library("EGL"):
    os.environ.setdefault("MUJOCO_GL", "egl")
