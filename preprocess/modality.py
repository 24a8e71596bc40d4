"""The modalities bindset knows, as one string enum shared by every package."""

from enum import StrEnum


class Modality(StrEnum):
    IMAGE = "image"
    VIDEO = "video"
    TEXT = "text"
    AUDIO = "audio"
    DEPTH = "depth"
    THERMAL = "thermal"
    IMU = "imu"
