"""What several packages share and none of them owns: the coded-error base every client-facing error
derives from, the exceptions that mean "a store is unreachable or failing", and the stop of background
tasks. Imports nothing from the project, so every package (`routing` included) may import it.
"""
