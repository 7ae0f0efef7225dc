//! End-to-end tests of the hub: the real broker, ingest, store and HTTP API in this process, on
//! ephemeral ports, driven by fake agents over MQTT. One test binary, so the harness is built once.

mod access;
mod api;
mod cli;
mod external;
mod harness;
mod ingest;
mod openapi;
mod page;
mod presence;
mod restart;
mod scenarios;
mod startup;
mod webhooks;
