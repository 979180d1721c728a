"""The stages of a fit, each a module with plain inputs and outputs, in the order they run::

    data -> audit -> plan -> checks -> train -> evaluate -> report

:mod:`headstart.recipe` calls them in that order; ``headstart check``, ``lr-find`` and
``audit`` call the first few of them alone.
"""
