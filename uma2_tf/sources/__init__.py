"""Where datasets come from: the simulator, the MovieLens-fitted world, RecFlow, KuaiRand, a user's
own logs (in memory or as a Beam pipeline), each a TFDS builder, and `registry`, which knows them
all.

    dataset = registry.load("uma2_simulated/default", data_dir)

Every builder writes the record of `uma2_tf.data.schema`; nothing under `uma2_tf.data` imports this
package.
"""
