"""Shadow reads and the divergence engine. The serving process admits a read and hands it off
(`runner`, `job`); the shadow process (`process`) sends it to the other side, lifts both answers (`lift`),
diffs them under the policy's rules (`differ`, `compare`, `rules`, `paths`), tells noise from divergence
(`noise`, `analysis`), stores masked samples (`mask`, `sample`, `divergences`) and counts (`tally`), read
back as rates and reports (`rates`, `report`). `lift` and `differ` are pure; automatic rollback acts on
the rates from the control plane (`proxy.control.rollback`)."""
