// The journal's changes as they are committed: the /api/v1/changes long-poll.

import { ApiError, api } from "./api.js";

const HEAD = "9223372036854775807"; // a since no journal reaches: the 409 says where it is

// Where the journal is now ({journal_id, last_version}), without reading it.
async function head() {
  try {
    const page = await api("/api/v1/changes", { params: { since: HEAD, limit: 1 } });
    return { journal_id: page.journal_id, last_version: page.last_version };
  } catch (error) {
    if (error instanceof ApiError && error.status === 409) {
      return { journal_id: error.body.journal_id, last_version: error.body.last_version };
    }
    throw error;
  }
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Calls onChanges(items) for every batch; onJournalChanged() when the journal is another one.
export async function follow({ onChanges, onJournalChanged, onTrouble }) {
  let position = null;
  let failures = 0;
  for (;;) {
    try {
      if (position === null) position = await head();
      const page = await api("/api/v1/changes", {
        params: { since: position.last_version, journal_id: position.journal_id, wait: 25, limit: 500 },
      });
      position = { journal_id: page.journal_id, last_version: page.last_version };
      failures = 0;
      onTrouble(false);
      if (page.items.length) onChanges(page.items);
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) {
        // Another journal (a new database, a restored backup): start again from its state.
        position = { journal_id: error.body.journal_id, last_version: error.body.last_version };
        onJournalChanged();
        continue;
      }
      failures += 1;
      onTrouble(true);
      await pause(Math.min(1000 * 2 ** failures, 30000));
    }
  }
}
