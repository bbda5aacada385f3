// CURVE security for lstash's ZeroMQ sockets: keys, and who trusts whom.
//
// Every process of a job may have its own key pair. A socket that listens
// (a worker's transport, a store server) is a CURVE server: it accepts a
// connection only from a client whose public key it was told to allow, and
// everything on the connection is encrypted. A socket that connects needs
// the listening side's public key. Keys are 40-character Z85 text, as
// `lstash-keygen` writes them: `NAME.pub` (public) and `NAME.key` (secret,
// mode 0600) in a directory.
#pragma once

#include <lstash/export.h>
#include <lstash/status.h>

#include <string>
#include <vector>

namespace lstash {

struct CurveKeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters
};

// When set in a transport's or store's options, every socket authenticates
// and encrypts.
struct CurveSecurity {
  CurveKeyPair own;                          // this process's keys
  std::vector<std::string> allowed_clients;  // public keys that may connect to our listening sockets
  std::vector<std::string> server_keys;      // public key of each listening peer we connect to (see each user)
};

// A fresh key pair (kFailedPrecondition if libzmq was built without CURVE).
LSTASH_EXPORT Result<CurveKeyPair> GenerateCurveKeyPair();

// Writes DIR/NAME.pub and DIR/NAME.key (0600), creating DIR if needed.
LSTASH_EXPORT Status WriteCurveKeyPair(const CurveKeyPair& keys, const std::string& dir, const std::string& name);

// Reads DIR/NAME.key (and .pub); kInvalidArgument for a malformed key file.
LSTASH_EXPORT Result<CurveKeyPair> ReadCurveKeyPair(const std::string& dir, const std::string& name);

// Reads DIR/NAME.pub.
LSTASH_EXPORT Result<std::string> ReadCurvePublicKey(const std::string& dir, const std::string& name);

}  // namespace lstash
