//! `tolk keys create|list|revoke`: API keys, in the keys file or in Redis (as the server
//! is configured). A new key is printed once; only its hash is stored.

use std::sync::Arc;

use tolk_auth::keys::{ApiKeyRecord, FileKeyStore, KeyStore, RedisKeyStore};
use tolk_auth::{LimitOverrides, Permission};

use super::CommandError;
use crate::cli::{KeysAction, KeysArgs, KeysStoreArgs};

/// The key store the flags name: Redis when a URL is given, else the keys file.
pub async fn open_store(args: &KeysStoreArgs) -> Result<Arc<dyn KeyStore>, CommandError> {
    Ok(match &args.redis_url {
        Some(url) => Arc::new(
            RedisKeyStore::connect(url, &args.redis_prefix)
                .await
                .map_err(|e| CommandError::Config(format!("--redis-url: {e}")))?,
        ),
        None => Arc::new(
            FileKeyStore::open(&args.keys_file).map_err(|e| CommandError::Config(e.to_string()))?,
        ),
    })
}

fn show(record: &ApiKeyRecord) -> String {
    let created = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(record.created_at_ms),
    );
    let state = match record.revoked_at_ms {
        Some(_) => "revoked",
        None => "active",
    };
    format!(
        "{}  {:8}  {:10}  {}  {}  {}",
        record.id,
        state,
        record.tier,
        created,
        record.permissions.join(","),
        record.name
    )
}

pub fn run(args: KeysArgs) -> Result<(), CommandError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::Other(e.into()))?;
    runtime.block_on(async move {
        let store = open_store(&args.store).await?;
        let fail = |e: tolk_auth::keys::KeyError| CommandError::Config(e.to_string());
        match args.action {
            KeysAction::Create {
                name,
                tier,
                permissions,
                requests_per_minute,
                concurrent_streams,
                audio_minutes_per_day,
                json,
            } => {
                let permissions: Vec<Permission> = if permissions.is_empty() {
                    Permission::ALL.to_vec()
                } else {
                    permissions
                        .iter()
                        .map(|p| {
                            Permission::parse(p).ok_or_else(|| {
                                CommandError::Unsupported(format!(
                                    "unknown permission '{p}'; known: {}",
                                    Permission::ALL.map(|p| p.as_str()).join(", ")
                                ))
                            })
                        })
                        .collect::<Result<_, _>>()?
                };
                let limits = LimitOverrides {
                    requests_per_minute,
                    concurrent_streams,
                    audio_minutes_per_day,
                };
                let (record, key) = store
                    .create(&name, &tier, &permissions, limits)
                    .await
                    .map_err(fail)?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "key": key, "id": record.id, "name": record.name, "tier": record.tier, "permissions": record.permissions })
                    );
                } else {
                    println!("{key}");
                    eprintln!(
                        "key {} ({}, tier {}) created; it is shown only now: store it safely",
                        record.id, record.name, record.tier
                    );
                }
            }
            KeysAction::List { json } => {
                let records = store.list().await.map_err(fail)?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string(&records).map_err(|e| CommandError::Other(e.into()))?
                    );
                } else {
                    for record in &records {
                        println!("{}", show(record));
                    }
                }
            }
            KeysAction::Revoke { id } => {
                if !store.revoke(&id).await.map_err(fail)? {
                    return Err(CommandError::Unsupported(format!("no key with id '{id}'")));
                }
                eprintln!("key {id} revoked");
            }
        }
        Ok(())
    })
}
