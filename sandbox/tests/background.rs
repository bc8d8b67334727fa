//! `shared()`: one sandbox for the whole process, which outlives the runtime
//! of the test that started it, as a suite whose every test makes its own
//! runtime needs.

use crate::support::{Control, pair};

#[test]
fn the_shared_sandbox_outlives_the_runtime_that_started_it() {
    let first = runtime().block_on(async {
        let sandbox = wago_sandbox::shared();
        let control = Control::new(sandbox.addr());
        control.create_phone("15550100101").await;
        let (companion, device) = pair(&control, "15550100101").await;
        companion.stop().await;
        (sandbox.addr(), device)
    });
    // That runtime is gone; a second one finds the same sandbox serving,
    // with the first test's account in it.
    let second = runtime().block_on(async {
        let sandbox = wago_sandbox::shared();
        let control = Control::new(sandbox.addr());
        let (companion, device) = pair(&control, "15550100101").await;
        companion.stop().await;
        (sandbox.addr(), device)
    });
    assert_eq!(first.0, second.0, "one sandbox for the process");
    assert_eq!((first.1, second.1), (1, 2), "the account's next device");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}
