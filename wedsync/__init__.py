"""The composition root: the ``wedsync`` command and the ``wedsync dev`` supervisor, the only
package that may import the edge, the workers and the embedded servers together."""
