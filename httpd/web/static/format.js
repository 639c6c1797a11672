// How the journal writes numbers, times and durations.

// The call object's number is E.164 (or bare digits for service numbers). Russian and
// Kazakh numbers are written as phonenumbers' INTERNATIONAL format writes them on the
// server (storage/numbers.py): +7 916 123-45-67.
export function formatNumber(number) {
  if (!number) return "";
  const ru = /^\+7(\d{3})(\d{3})(\d{2})(\d{2})$/.exec(number);
  if (ru) return `+7 ${ru[1]} ${ru[2]}-${ru[3]}-${ru[4]}`;
  return number;
}

// Times come with the PBX's offset: the digits are the PBX's wall clock, shown as they are.
export function formatTime(iso) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})/.exec(iso ?? "");
  if (!m) return { date: "", time: "" };
  return { date: `${m[3]}.${m[2]}.${m[1]}`, time: `${m[4]}:${m[5]}:${m[6]}` };
}

export function formatDuration(seconds) {
  const total = Math.round(seconds ?? 0);
  if (total <= 0) return "";
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

export const ROLE = { placed: "позвонил", answered: "принял", rang: "не ответил" };
export const DIRECTION = { incoming: "Входящий", outgoing: "Исходящий", internal: "Внутренний" };
export const STATUS_TONE = {
  answered: "ok", reached: "ok", no_answer: "bad", lost: "bad", cancelled: "muted",
};
