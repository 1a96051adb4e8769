"""The data loop's recorder, without ROS: what triggers a recording, how recordings are grouped
with their context, and the recordings directory with its index and disk quota."""
