"""The SIP front: Kamailio in front of a pool of pjsua2 media workers.

- `config`: the `[sipfront]` section (`KamailioConfig`); rules that span sections: `front_errors`.
- `kamailio`: renders kamailio.cfg and the dispatcher list from the typed config, and checks them
  with the real binary (`kamailio -c`, then a short foreground start: `-c` misses run-time fixups).
- `process`: `KamailioProcess`, Kamailio as a supervised child of `hotline-gateway run`.
- `held`: after each Kamailio start, the calls the workers already hold put into its call load
  (from their heartbeats) before callers are routed.
- `commands`: what `sipfront render`, `status` and `run` do with these.
- `rpc`: `kamcmd` calls (dispatcher state, registrations) and their parsed answers.
- `pool`: the media workers `run` starts (ids, addresses), as the dispatcher list names them.
- `status`: what `hotline-gateway status` prints.

Design and measurements: docs/deploy.md and ../shared/notes-kamailio-findings.md.
"""
