//! The cache both providers keep their bearer credential in: the APNs provider token and the
//! FCM access token. Each provider only says how to make a new credential ([`Mint`]) and how
//! long it lasts; when to replace it, and how to do so without stalling pushes, lives here.
//!
//! - **Single flight, detached.** At most one refresh runs at a time, as a task of its own: a
//!   push that started one and then hit its deadline (or was cancelled) does not cancel it, and
//!   every push that needs the result waits for that one refresh instead of starting another.
//! - **Refresh ahead.** A credential that comes over the network (FCM) is replaced in the
//!   background some time before it expires; pushes keep using it until it really does, so a
//!   slow token endpoint costs no push any time. One made locally in microseconds (APNs) is
//!   replaced when due, by whichever push finds it so.
//! - **Margins proportional to the lifetime**, and a floor on it, so that a short or absurd
//!   `expires_in` cannot turn into a fetch per push.
//! - **Ages on the monotonic clock**, measured from when the refresh *started*: the provider's
//!   countdown began no later than that.
//! - **One forced renewal.** A provider that refuses a credential as expired gets it replaced
//!   once; a replacement refused again while young means the clocks or keys disagree, and
//!   minting more would only get us throttled.

use std::{
    fmt,
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use res_push_proto::Provider;
use tokio::sync::watch;
use tracing::{Instrument, debug, info_span, warn};

use crate::{clock::Clock, metrics::Metrics};

/// A credential said to last less than this is used this long anyway: a provider that then
/// refuses it gets it replaced (once per credential), which costs less than a fetch per push.
pub(crate) const MIN_LIFETIME: Duration = Duration::from_secs(60);
/// At most this long before expiry a background refresh starts (a quarter of the lifetime for
/// shorter ones), which leaves a slow or briefly failing endpoint several tries.
const MAX_REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// At most this long before expiry a credential stops being sent (a twentieth of the lifetime
/// for shorter ones), so none expires between being sent and being checked.
const MAX_EXPIRY_GUARD: Duration = Duration::from_secs(30);
/// After a failed background refresh, the next one waits this long: the current credential is
/// still good, and a failing endpoint should not be asked once per push.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// A newly made credential.
#[derive(Debug, Clone)]
pub(crate) struct Minted {
    /// The whole `authorization` header value.
    pub(crate) header: Arc<str>,
    /// How long it may be used, from when minting started.
    pub(crate) lifetime: Duration,
}

/// Makes credentials of one kind.
pub(crate) trait Mint: fmt::Debug + Send + Sync + 'static {
    /// Why no credential could be made.
    type Error: Clone + fmt::Display + fmt::Debug + From<Lost> + Send + Sync + 'static;

    /// Makes a new credential. Runs in a task of its own, so it must bound its own duration.
    fn mint(&self) -> impl Future<Output = Result<Minted, Self::Error>> + Send;
}

/// The refresh task ended without an answer (it panicked, or the runtime is shutting down).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lost;

impl From<Lost> for String {
    fn from(_: Lost) -> Self {
        "the credential refresh ended without a result".to_owned()
    }
}

/// When a credential is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// In the background ahead of expiry, while pushes keep the current one: for credentials
    /// fetched over the network.
    Ahead,
    /// When its lifetime is over, by the push that finds it so: for credentials made locally
    /// whose lifetime is already the age at which to replace them.
    AtExpiry,
}

/// How a cache treats its credentials.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) refresh: Refresh,
    /// A credential refused as expired while younger than this is not replaced: the provider
    /// would refuse the update too (APNs: one new provider token per 20 minutes).
    pub(crate) min_replace_age: Duration,
}

/// What the cache reports on, for metrics and logs.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    pub(crate) provider: Provider,
    pub(crate) app: Arc<str>,
    pub(crate) metrics: Arc<Metrics>,
}

/// A bearer credential to send, and which one it was (to expire exactly that one).
#[derive(Debug, Clone)]
pub(crate) struct Bearer {
    /// The whole `authorization` header value.
    pub(crate) header: Arc<str>,
    /// Increases with every credential minted.
    pub(crate) generation: u64,
}

#[derive(Debug)]
struct Cached {
    bearer: Bearer,
    /// When minting it started.
    minted_at: Instant,
    /// The lifetime the minter stated, before the floor.
    stated_lifetime: Duration,
    /// From then on a push that uses it also starts its replacement.
    refresh_from: Instant,
    /// From then on it is not sent any more.
    usable_until: Instant,
    /// Minted because the previous one was refused as expired.
    forced: bool,
}

type Outcome<E> = Option<Result<Bearer, E>>;

#[derive(Debug)]
struct State<E> {
    current: Option<Cached>,
    generation: u64,
    /// The next credential minted replaces one the provider refused.
    force_next: bool,
    /// The refresh under way; it publishes its result here.
    refreshing: Option<watch::Receiver<Outcome<E>>>,
    /// No background refresh before this (one just failed).
    quiet_until: Option<Instant>,
}

#[derive(Debug)]
struct Inner<M: Mint> {
    mint: M,
    policy: Policy,
    clock: Clock,
    owner: Owner,
    state: Mutex<State<M::Error>>,
}

/// The cached credential of one provider account, and its replacement.
#[derive(Debug)]
pub(crate) struct CredentialCache<M: Mint> {
    inner: Arc<Inner<M>>,
}

/// When a credential minted at `start` with `stated` lifetime is to be refreshed and retired.
fn schedule(policy: &Policy, start: Instant, stated: Duration) -> (Instant, Instant) {
    let lifetime = stated.max(MIN_LIFETIME);
    match policy.refresh {
        Refresh::AtExpiry => {
            let end = start + lifetime;
            (end, end)
        }
        Refresh::Ahead => {
            let guard = (lifetime / 20).min(MAX_EXPIRY_GUARD);
            let ahead = (lifetime / 4).min(MAX_REFRESH_AHEAD).max(guard);
            (start + lifetime - ahead, start + lifetime - guard)
        }
    }
}

impl<M: Mint> CredentialCache<M> {
    /// An empty cache: nothing is minted until the first [`bearer`](Self::bearer).
    pub(crate) fn new(mint: M, policy: Policy, clock: Clock, owner: Owner) -> Self {
        Self {
            inner: Arc::new(Inner {
                mint,
                policy,
                clock,
                owner,
                state: Mutex::new(State {
                    current: None,
                    generation: 0,
                    force_next: false,
                    refreshing: None,
                    quiet_until: None,
                }),
            }),
        }
    }

    /// The credential to send now: the cached one while usable (starting its replacement in
    /// the background once due), else the result of the refresh under way, or of a new one.
    /// Dropping the returned future leaves that refresh running.
    pub(crate) async fn bearer(&self) -> Result<Bearer, M::Error> {
        let mut refreshing = {
            let now = self.inner.clock.monotonic();
            let mut state = self.inner.state();
            if let Some(cached) = state.current.as_ref().filter(|c| now < c.usable_until) {
                let bearer = cached.bearer.clone();
                let due = now >= cached.refresh_from
                    && state.quiet_until.is_none_or(|t| now >= t)
                    && !refresh_alive(&state);
                if due {
                    debug!(
                        generation = bearer.generation,
                        "refreshing the credential ahead of its expiry"
                    );
                    Inner::start_refresh(&self.inner, &mut state);
                }
                return Ok(bearer);
            }
            match state.refreshing.clone().filter(|_| refresh_alive(&state)) {
                Some(rx) => rx,
                None => Inner::start_refresh(&self.inner, &mut state),
            }
        };
        let outcome = refreshing.wait_for(Option::is_some).await;
        match outcome.as_deref() {
            Ok(Some(result)) => result.clone(),
            _ => Err(Lost.into()),
        }
    }

    /// The provider refused credential `generation` as expired. Returns whether a retry with
    /// another one makes sense: yes when a newer one exists or one will be minted; no when the
    /// refused one was itself minted after such a refusal and is still within its stated
    /// lifetime, or is younger than the policy's `min_replace_age`. Either way the clocks or
    /// keys disagree by more than a refresh can fix, and only an operator can help.
    pub(crate) fn expire(&self, generation: u64) -> bool {
        let now = self.inner.clock.monotonic();
        let mut state = self.inner.state();
        match &state.current {
            Some(cached) if cached.bearer.generation == generation => {
                let age = now.saturating_duration_since(cached.minted_at);
                if (cached.forced && age < cached.stated_lifetime)
                    || age < self.inner.policy.min_replace_age
                {
                    return false;
                }
                state.current = None;
                state.force_next = true;
                true
            }
            // Someone else already replaced it.
            _ => true,
        }
    }
}

/// Whether the refresh under way (if any) can still answer.
fn refresh_alive<E>(state: &State<E>) -> bool {
    // A closed channel without a result: the task died; a new refresh must take over.
    state
        .refreshing
        .as_ref()
        .is_some_and(|rx| rx.has_changed().is_ok())
}

impl<M: Mint> Inner<M> {
    fn state(&self) -> MutexGuard<'_, State<M::Error>> {
        // Never held across an await; a panic while holding it leaves plain field writes.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns the one refresh and returns where its result will show.
    fn start_refresh(
        this: &Arc<Self>,
        state: &mut State<M::Error>,
    ) -> watch::Receiver<Outcome<M::Error>> {
        let (tx, rx) = watch::channel(None);
        state.refreshing = Some(rx.clone());
        let inner = Arc::clone(this);
        let span = info_span!(
            "credential_refresh",
            provider = crate::metrics::provider_label(this.owner.provider),
            app = %this.owner.app
        );
        // Its own task: the push that found the credential due may be dropped at its deadline,
        // and the pushes after it still need the result.
        tokio::spawn(
            async move {
                let started = inner.clock.monotonic();
                let result = inner.mint.mint().await;
                let outcome = inner.finish(started, result);
                tx.send_replace(Some(outcome));
            }
            .instrument(span),
        );
        rx
    }

    /// Stores what a refresh that started at `started` produced.
    fn finish(
        &self,
        started: Instant,
        result: Result<Minted, M::Error>,
    ) -> Result<Bearer, M::Error> {
        let now = self.clock.monotonic();
        let mut state = self.state();
        state.refreshing = None;
        match result {
            Ok(minted) => {
                state.generation += 1;
                let (refresh_from, usable_until) = schedule(&self.policy, started, minted.lifetime);
                let bearer = Bearer {
                    header: minted.header,
                    generation: state.generation,
                };
                state.current = Some(Cached {
                    bearer: bearer.clone(),
                    minted_at: started,
                    stated_lifetime: minted.lifetime,
                    refresh_from,
                    usable_until,
                    forced: std::mem::take(&mut state.force_next),
                });
                state.quiet_until = None;
                drop(state);
                self.owner
                    .metrics
                    .credential_refreshed(self.owner.provider, &self.owner.app);
                debug!(
                    generation = bearer.generation,
                    lifetime = ?minted.lifetime,
                    "new credential"
                );
                Ok(bearer)
            }
            Err(e) => {
                state.quiet_until = Some(now + RETRY_AFTER_FAILURE);
                let still_usable = state.current.as_ref().is_some_and(|c| now < c.usable_until);
                drop(state);
                if still_usable {
                    warn!(error = %e, "credential refresh failed; the current one stays in use until it expires");
                } else {
                    debug!(error = %e, "credential refresh failed");
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::sync::Semaphore;

    /// A minter that counts its calls, answers after `delay` (real time), and can be held
    /// closed or made to fail.
    #[derive(Debug)]
    struct Counter {
        calls: AtomicU64,
        lifetime: Mutex<Duration>,
        fail: Mutex<bool>,
        delay: Duration,
        gate: Option<Arc<Semaphore>>,
    }

    impl Counter {
        fn new(lifetime: Duration, delay: Duration) -> Self {
            Self {
                calls: AtomicU64::new(0),
                lifetime: Mutex::new(lifetime),
                fail: Mutex::new(false),
                delay,
                gate: None,
            }
        }
    }

    impl Mint for Counter {
        type Error = String;

        async fn mint(&self) -> Result<Minted, String> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            tokio::time::sleep(self.delay).await;
            if *self.fail.lock().unwrap() {
                return Err(format!("refused #{n}"));
            }
            Ok(Minted {
                header: format!("Bearer t{n}").into(),
                lifetime: *self.lifetime.lock().unwrap(),
            })
        }
    }

    fn owner() -> Owner {
        Owner {
            provider: Provider::Fcm,
            app: "test".into(),
            metrics: Arc::new(Metrics::new()),
        }
    }

    const AHEAD: Policy = Policy {
        refresh: Refresh::Ahead,
        min_replace_age: Duration::ZERO,
    };

    fn cache(mint: Counter, policy: Policy) -> (CredentialCache<Counter>, Arc<ManualClock>) {
        let clock = ManualClock::new();
        let cache = CredentialCache::new(mint, policy, Clock::from(Arc::clone(&clock)), owner());
        (cache, clock)
    }

    fn calls(cache: &CredentialCache<Counter>) -> u64 {
        cache.inner.mint.calls.load(Ordering::SeqCst)
    }

    /// Lets spawned refreshes run to completion.
    async fn settle(cache: &CredentialCache<Counter>) {
        for _ in 0..1000 {
            if !refresh_alive(&cache.inner.state()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the refresh never finished");
    }

    #[test]
    fn margins_scale_with_the_lifetime_and_short_lifetimes_are_floored() {
        let t = Instant::now();
        let hour = Duration::from_secs(3600);
        let (refresh, retire) = schedule(&AHEAD, t, hour);
        assert_eq!(refresh - t, hour - MAX_REFRESH_AHEAD);
        assert_eq!(retire - t, hour - MAX_EXPIRY_GUARD);
        let (refresh, retire) = schedule(&AHEAD, t, Duration::from_secs(120));
        assert_eq!(refresh - t, Duration::from_secs(90));
        assert_eq!(retire - t, Duration::from_secs(114));
        for short in [0, 1, 10] {
            let (refresh, retire) = schedule(&AHEAD, t, Duration::from_secs(short));
            assert_eq!(refresh - t, Duration::from_secs(45), "{short}");
            assert_eq!(retire - t, Duration::from_secs(57), "{short}");
        }
        let at_expiry = Policy {
            refresh: Refresh::AtExpiry,
            ..AHEAD
        };
        let (refresh, retire) = schedule(&at_expiry, t, Duration::from_secs(3000));
        assert_eq!(
            (refresh - t, retire - t),
            (Duration::from_secs(3000), Duration::from_secs(3000))
        );
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_mint() {
        let (cache, _clock) = cache(
            Counter::new(Duration::from_secs(3600), Duration::from_millis(50)),
            AHEAD,
        );
        let (a, b, c) = tokio::join!(cache.bearer(), cache.bearer(), cache.bearer());
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        assert_eq!(calls(&cache), 1);
        assert_eq!((&*a.header, a.generation), ("Bearer t1", 1));
        assert_eq!(b.header, a.header);
        assert_eq!(c.header, a.header);
    }

    #[tokio::test]
    async fn a_refresh_outlives_the_caller_that_started_it() {
        let (cache, _clock) = cache(
            Counter::new(Duration::from_secs(3600), Duration::from_millis(100)),
            AHEAD,
        );
        let gave_up = tokio::time::timeout(Duration::from_millis(10), cache.bearer()).await;
        assert!(gave_up.is_err(), "the caller gave up first");
        settle(&cache).await;
        assert_eq!(&*cache.bearer().await.unwrap().header, "Bearer t1");
        assert_eq!(
            calls(&cache),
            1,
            "the abandoned refresh was kept, not redone"
        );
    }

    #[tokio::test]
    async fn the_current_credential_serves_while_its_replacement_is_minted() {
        let (cache, clock) = cache(
            Counter::new(Duration::from_secs(3600), Duration::from_millis(300)),
            AHEAD,
        );
        let first = cache.bearer().await.unwrap();
        clock.advance(Duration::from_secs(3400));
        // Due for replacement: every caller still gets the current one at once.
        for _ in 0..5 {
            let started = Instant::now();
            let b = cache.bearer().await.unwrap();
            assert!(started.elapsed() < Duration::from_millis(100));
            assert_eq!(b.header, first.header);
        }
        tokio::task::yield_now().await;
        assert_eq!(calls(&cache), 2, "one refresh for all of them, under way");
        settle(&cache).await;
        let second = cache.bearer().await.unwrap();
        assert_eq!((&*second.header, second.generation), ("Bearer t2", 2));
        // The new one's lifetime counts from when its refresh started.
        clock.advance(Duration::from_secs(3600 - 30));
        let started = Instant::now();
        let third = cache.bearer().await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "past expiry, callers wait"
        );
        assert_eq!(third.generation, 3);
    }

    #[tokio::test]
    async fn a_short_expires_in_does_not_mean_a_mint_per_call() {
        let (cache, clock) = cache(Counter::new(Duration::from_secs(1), Duration::ZERO), AHEAD);
        for _ in 0..50 {
            cache.bearer().await.unwrap();
            clock.advance(Duration::from_millis(500));
        }
        settle(&cache).await;
        // 25 s of calls with a credential said to last 1 s: the floor keeps it for 45 s.
        assert_eq!(calls(&cache), 1);
        *cache.inner.mint.lifetime.lock().unwrap() = Duration::ZERO;
        clock.advance(Duration::from_secs(60));
        for _ in 0..100 {
            cache.bearer().await.unwrap();
            clock.advance(Duration::from_millis(100));
        }
        settle(&cache).await;
        assert_eq!(calls(&cache), 2);
    }

    #[tokio::test]
    async fn a_failing_background_refresh_keeps_the_credential_and_backs_off() {
        let (cache, clock) = cache(
            Counter::new(Duration::from_secs(3600), Duration::ZERO),
            AHEAD,
        );
        let first = cache.bearer().await.unwrap();
        *cache.inner.mint.fail.lock().unwrap() = true;
        clock.advance(Duration::from_secs(3400));
        for _ in 0..20 {
            assert_eq!(cache.bearer().await.unwrap().header, first.header);
            settle(&cache).await;
        }
        assert_eq!(
            calls(&cache),
            2,
            "one try per back-off period, not one per call"
        );
        clock.advance(RETRY_AFTER_FAILURE);
        assert_eq!(cache.bearer().await.unwrap().header, first.header);
        settle(&cache).await;
        assert_eq!(calls(&cache), 3);
        // Really expired and the endpoint still failing: callers get the error.
        clock.advance(Duration::from_secs(600));
        assert_eq!(cache.bearer().await.unwrap_err(), "refused #4");
        *cache.inner.mint.fail.lock().unwrap() = false;
        assert_eq!(&*cache.bearer().await.unwrap().header, "Bearer t5");
    }

    #[tokio::test]
    async fn a_refused_credential_is_replaced_once() {
        let policy = Policy {
            refresh: Refresh::AtExpiry,
            min_replace_age: Duration::from_secs(20 * 60),
        };
        let (cache, clock) = cache(
            Counter::new(Duration::from_secs(50 * 60), Duration::ZERO),
            policy,
        );
        let first = cache.bearer().await.unwrap();
        // Too young to be really expired: replacing it would be throttled.
        assert!(!cache.expire(first.generation));
        clock.advance(Duration::from_secs(30 * 60));
        assert!(cache.expire(first.generation));
        let second = cache.bearer().await.unwrap();
        assert_ne!(second.header, first.header);
        // A late report about the old one changes nothing.
        assert!(cache.expire(first.generation));
        assert_eq!(cache.bearer().await.unwrap().header, second.header);
        // The replacement refused as well, even later: the clocks disagree, stop minting.
        clock.advance(Duration::from_secs(30 * 60));
        assert!(!cache.expire(second.generation));
        assert_eq!(cache.bearer().await.unwrap().header, second.header);
        // Normal ageing still replaces it.
        clock.advance(Duration::from_secs(30 * 60));
        assert_ne!(cache.bearer().await.unwrap().header, second.header);
        assert_eq!(calls(&cache), 3);
    }

    #[tokio::test]
    async fn a_forced_replacement_past_its_stated_lifetime_may_be_replaced_again() {
        // A 10 s token, kept for the floor's minute: refused past its 10 s, it was no clock
        // disagreement, so it is replaced again rather than called a configuration error.
        let (cache, clock) = cache(Counter::new(Duration::from_secs(10), Duration::ZERO), AHEAD);
        let first = cache.bearer().await.unwrap();
        clock.advance(Duration::from_secs(20));
        assert!(cache.expire(first.generation));
        let second = cache.bearer().await.unwrap();
        assert!(
            !cache.expire(second.generation),
            "forced and refused at once"
        );
        clock.advance(Duration::from_secs(20));
        assert!(cache.expire(second.generation));
    }

    #[tokio::test]
    async fn ages_follow_the_monotonic_clock_not_the_wall_clock() {
        let policy = Policy {
            refresh: Refresh::AtExpiry,
            min_replace_age: Duration::ZERO,
        };
        let (cache, clock) = cache(
            Counter::new(Duration::from_secs(50 * 60), Duration::ZERO),
            policy,
        );
        let first = cache.bearer().await.unwrap();
        clock.step_wall_forward(Duration::from_secs(2 * 3600));
        assert_eq!(cache.bearer().await.unwrap().header, first.header);
        clock.step_wall_back(Duration::from_secs(4 * 3600));
        clock.advance(Duration::from_secs(51 * 60));
        assert_ne!(cache.bearer().await.unwrap().header, first.header);
    }

    #[tokio::test]
    async fn a_refresh_task_that_dies_is_replaced() {
        let gate = Arc::new(Semaphore::new(0));
        let mut mint = Counter::new(Duration::from_secs(3600), Duration::ZERO);
        mint.gate = Some(Arc::clone(&gate));
        let (cache, _clock) = cache(mint, AHEAD);
        // The first refresh runs on a runtime that goes away with it, unanswered.
        let inner = Arc::clone(&cache.inner);
        std::thread::spawn(move || {
            let other = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            other.block_on(async {
                Inner::start_refresh(&inner, &mut inner.state());
                // Until it is stuck at the gate.
                while inner.mint.calls.load(Ordering::SeqCst) == 0 {
                    tokio::task::yield_now().await;
                }
            });
        })
        .join()
        .unwrap();
        assert!(!refresh_alive(&cache.inner.state()));
        gate.add_permits(1);
        assert_eq!(&*cache.bearer().await.unwrap().header, "Bearer t2");
    }
}
