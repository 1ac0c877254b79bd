"""Folder task builder (`folder_task`): your own images with a metadata CSV and a task.json."""
