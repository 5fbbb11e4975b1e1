"""A small game for multi-turn GRPO: find a secret number between 1 and 100 by guessing, told "higher" or "lower"
after each guess. Each dataset row holds the secret (its `secret` column); the fewer guesses, the higher the reward.

    python train_grpo.py --custom-data examples/guess_number.jsonl --environment examples/guess_number.py:GuessNumber
"""


class GuessNumber:
    """One episode: the secret of a row, and the guesses made so far."""

    def __init__(self):
        self.secret, self.guesses, self.found = 0, 0, False

    def reset(self, secret: int, **row) -> str:
        """Start an episode for a dataset row; the text returned is appended to the row's prompt."""
        self.secret, self.guesses, self.found = int(secret), 0, False
        return " The number is between 1 and 100. Call guess with a number; each answer says higher, lower or correct."

    def guess(self, number: int) -> str:
        """Guess the secret number.

        Args:
            number: The guess, from 1 to 100.
        """
        self.guesses += 1
        if number == self.secret:
            self.found = True
            return "correct"
        return "higher" if number < self.secret else "lower"

    def get_reward(self) -> float:
        """1 for finding the number with the first guess, 0.1 less for each guess after it (at least 0.1); 0 for not
        finding it."""
        if not self.found:
            return 0.0
        return max(0.1, 1.0 - 0.1 * (self.guesses - 1))
