//! Local capture devices: V4L2 nodes found and followed through udev (`udev`), and what each can capture (`v4l2`).
//! This layer knows devices, nodes and modes; it knows nothing of cameras' public ids, their lifecycle or clients
//! (`discovery` turns devices into cameras).

pub mod udev;
pub mod v4l2;
