//! Proof of the shared secret, as RabbitMQ's Erlang cookie: each side sends
//! a random challenge and answers the other's with HMAC-SHA256(secret,
//! challenge, its role), so neither the secret nor a replayable answer ever
//! crosses the link. A node that cannot prove the secret is refused before
//! any Raft message is read.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ClusterError;

/// First bytes of every cluster connection: a protocol name and version.
const MAGIC: &[u8; 8] = b"WARRENC1";
const CHALLENGE: usize = 32;
const PROOF: usize = 32;

/// Which end of the connection is proving.
#[derive(Clone, Copy)]
enum Role {
    Dialer,
    Listener,
}

fn proof(secret: &[u8], challenge: &[u8], role: Role) -> [u8; PROOF] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(challenge);
    mac.update(match role {
        Role::Dialer => b"dialer",
        Role::Listener => b"listen",
    });
    mac.finalize().into_bytes().into()
}

fn verify(secret: &[u8], challenge: &[u8], role: Role, got: &[u8]) -> Result<(), ClusterError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(challenge);
    mac.update(match role {
        Role::Dialer => b"dialer",
        Role::Listener => b"listen",
    });
    mac.verify_slice(got).map_err(|_| ClusterError::BadSecret)
}

fn challenge() -> [u8; CHALLENGE] {
    let mut c = [0u8; CHALLENGE];
    rand::thread_rng().fill_bytes(&mut c);
    c
}

/// The dialing side: send magic and a challenge, answer the listener's
/// challenge, then check the listener's answer to ours.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: &[u8],
) -> Result<(), ClusterError> {
    let mine = challenge();
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&mine);
    s.write_all(&hello).await?;
    let mut theirs = [0u8; CHALLENGE];
    s.read_exact(&mut theirs).await?;
    s.write_all(&proof(secret, &theirs, Role::Dialer)).await?;
    let mut got = [0u8; PROOF];
    s.read_exact(&mut got)
        .await
        .map_err(|_| ClusterError::BadSecret)?;
    verify(secret, &mine, Role::Listener, &got)
}

/// The listening side: check magic, send a challenge, check the dialer's
/// answer, and only then answer the dialer's challenge, so a peer without
/// the secret learns nothing from us.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secret: &[u8],
) -> Result<(), ClusterError> {
    let mut hello = [0u8; 8 + CHALLENGE];
    s.read_exact(&mut hello).await?;
    if &hello[..8] != MAGIC {
        return Err(ClusterError::NotCluster);
    }
    let mine = challenge();
    s.write_all(&mine).await?;
    let mut got = [0u8; PROOF];
    s.read_exact(&mut got).await?;
    verify(secret, &mine, Role::Dialer, &got)?;
    s.write_all(&proof(secret, &hello[8..], Role::Listener))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_secret_passes_other_secret_fails() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (d, l) = tokio::join!(dial(&mut a, b"s3cret"), accept(&mut b, b"s3cret"));
        assert!(d.is_ok() && l.is_ok());
        let (mut a, mut b) = tokio::io::duplex(1024);
        let listener = tokio::spawn(async move { accept(&mut b, b"s3cret").await });
        let d = dial(&mut a, b"wrong").await;
        drop(a);
        assert!(matches!(d, Err(ClusterError::BadSecret)));
        assert!(matches!(
            listener.await.unwrap(),
            Err(ClusterError::BadSecret)
        ));
    }
}
