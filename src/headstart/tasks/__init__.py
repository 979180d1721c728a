"""What else an image can be labelled with than one class, each by the recipe of classes:
:mod:`.regression` (a number an image) and :mod:`.multilabel` (several labels an image).
"""
