"""The validation gate: a version reaches traffic only when it is good enough and not worse than the baseline.

TFX's Evaluator, InfraValidator and Pusher in one step, on the artifact contract:

1. **It loads and answers**: the candidate is loaded by serving's own loader in a separate process
   (`python -m serving.load_check`) and answers its warm-up requests.
2. **Same data for both**: the held-out split is rebuilt from the candidate's recorded training config, and the
   candidate and the baseline (by default the newest version a server would serve: blessed, or exported before
   the gate) are both scored on it in this run, through their SavedModels. Stored numbers are never compared.
3. **Checks**: the optimizing metric against its floor and against the baseline (change threshold), each
   class's (or style's) figure against its floor, the p99 latency of one request at batch 1 against a ceiling
   and against the baseline measured alongside, and the size on disk.

The verdict, every check, the baseline and the data fingerprint go to `blessing.json` (`serving.contract.Blessing`)
in the version folder (and in its BentoML store copy), replaced in one rename; `blessing.png` plots candidate
against baseline. Serving serves only blessed versions, so writing a blessing is what rolls a version out.
"""

NOT_BLESSED_EXIT = 3  # what the family scripts and `modelservice validate` exit with for a version not blessed
