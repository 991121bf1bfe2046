"""The add-on's ``bpy``-free core: the backend client and session, job state, result files, history.

Nothing here imports ``bpy`` or any module of the add-on outside this folder except the job
contract (``..protocol``), so all of it runs and is tested in a plain Python. The modules one
level up are the Blender side: properties, operators, panels and the scene import.
"""
